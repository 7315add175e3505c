//! `vendor_data2.json`: the static document under `static`, plus one key per
//! dynamic target, each the JSON answer of a POST that carries Nova's body.
//! A target that fails or is slow is logged and left out; it never fails
//! the whole answer.

use crate::settings::{ApiSettings, DynamicTarget};
use bytes::Bytes;
use meta169_tree::full_hostname;
use meta169_tree::model::user_data_base64;
use meta169_tree::{to_python_json, Instance};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Largest answer read from a target.
pub const MAX_TARGET_RESPONSE_BYTES: usize = 1024 * 1024;

/// Calls dynamic targets on a shared, pooled client.
#[derive(Clone)]
pub struct VendorData {
    client: reqwest::Client,
    targets: Vec<DynamicTarget>,
    read_timeout: Duration,
}

impl VendorData {
    pub fn new(settings: &ApiSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.dynamic_connect_timeout)
            .user_agent("openstack-nova-vendordata")
            .build()?;
        Ok(VendorData {
            client,
            targets: settings.dynamic_targets.clone(),
            read_timeout: settings.dynamic_connect_timeout + settings.dynamic_read_timeout,
        })
    }

    /// The body Nova POSTs to each target.
    pub fn request_body(instance: &Instance, settings: &ApiSettings) -> Value {
        json!({
            "project-id": instance.project_id,
            "instance-id": instance.uuid,
            "image-id": instance.image_id,
            "user-data": user_data_base64(instance),
            "hostname": full_hostname(instance, &settings.render),
            "metadata": instance.meta,
            "boot-roles": "",
        })
    }

    /// Build the document for one instance.
    pub async fn document(&self, instance: &Instance, settings: &ApiSettings) -> Bytes {
        let mut doc = Map::new();
        if let Some(static_doc) = &settings.render.vendor_static {
            doc.insert("static".into(), (**static_doc).clone());
        }
        if !self.targets.is_empty() {
            let body = Self::request_body(instance, settings);
            let mut set = tokio::task::JoinSet::new();
            // Targets run concurrently; results are put back in config order.
            for (index, target) in self.targets.iter().cloned().enumerate() {
                let (this, body, uuid) = (self.clone(), body.clone(), instance.uuid.clone());
                set.spawn(async move { (index, this.call(&target, &body, &uuid).await) });
            }
            let mut results: Vec<(usize, Option<Value>)> = Vec::new();
            while let Some(joined) = set.join_next().await {
                if let Ok(r) = joined {
                    results.push(r);
                }
            }
            results.sort_by_key(|(i, _)| *i);
            for (index, value) in results {
                if let Some(value) = value {
                    doc.insert(self.targets[index].name.clone(), value);
                }
            }
        }
        Bytes::from(to_python_json(&Value::Object(doc)))
    }

    async fn call(&self, target: &DynamicTarget, body: &Value, uuid: &str) -> Option<Value> {
        let attempt = async {
            let response = self
                .client
                .post(&target.url)
                .header("Accept", "application/json")
                .json(body)
                .send()
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("answered HTTP {status}"));
            }
            // Read no more than the limit: a target that streams without
            // end must not fill memory before the size is checked.
            let bytes = meta169_http::body::read_response_bounded(
                response,
                MAX_TARGET_RESPONSE_BYTES,
                self.read_timeout,
            )
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(json!({}));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))
        };
        match tokio::time::timeout(self.read_timeout, attempt).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(reason)) => {
                tracing::warn!(target = %target.name, url = %target.url, instance = %uuid, "vendordata target left out: {reason}");
                None
            }
            Err(_) => {
                tracing::warn!(target = %target.name, url = %target.url, instance = %uuid,
                    "vendordata target left out: no answer within {:?}", self.read_timeout);
                None
            }
        }
    }
}
