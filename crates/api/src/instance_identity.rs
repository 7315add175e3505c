//! EC2's `dynamic/instance-identity/document`: cloud-init's EC2 datasource
//! in its AWS mode crawls it (and prefers its `instanceId`), and fails its
//! whole crawl without it; Nova has no `dynamic` tree. Served below every
//! EC2 version but not listed in the version's own listing, which stays
//! Nova's. The values are the EC2 tree's own (instance id, image, type,
//! zone, local address) and the record's project as the account; there
//! is no signature (`pkcs7`, `signature`), which nothing reads without AWS
//! keys to check it.

use crate::answer::plain;
use crate::cache::LoadedInstance;
use crate::error::ApiError;
use meta169_http::Answer;
use meta169_tree::{Body, ContentType};
use serde::Serialize;
use std::net::IpAddr;

/// The first path segment after the version.
const DYNAMIC: &str = "dynamic";
/// The identity document's format version (AWS's current one).
const DOCUMENT_VERSION: &str = "2017-09-30";

/// The document, with AWS's field names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    account_id: &'a str,
    availability_zone: String,
    image_id: String,
    instance_id: String,
    instance_type: String,
    private_ip: String,
    version: &'static str,
}

/// The answer for `segments` (`["ec2", version, "dynamic", ...]`), or
/// `None` when the path is not below `dynamic` (the tree answers it).
/// `requester` is the guest's address, for an instance with no fixed IPv4.
pub(crate) fn answer(
    loaded: &LoadedInstance,
    segments: &[&str],
    requester: impl FnOnce() -> IpAddr,
) -> Option<Result<Answer, ApiError>> {
    let (root, version, rest) = match segments {
        [root, version, first, rest @ ..] if *first == DYNAMIC => (*root, *version, rest),
        _ => return None,
    };
    if root != "ec2" || loaded.tree.lookup(&[root, version]).is_none() {
        return Some(Err(ApiError::not_found()));
    }
    Some(match rest {
        [] => Ok(plain(ContentType::Text, "instance-identity/")),
        ["instance-identity"] => Ok(plain(ContentType::Text, "document")),
        ["instance-identity", "document"] => document(loaded, version, requester),
        _ => Err(ApiError::not_found()),
    })
}

/// One EC2 `meta-data` leaf of this version, as text.
fn leaf(
    loaded: &LoadedInstance,
    version: &str,
    path: &[&str],
    requester: &mut Option<impl FnOnce() -> IpAddr>,
) -> String {
    let segments: Vec<&str> = ["ec2", version, "meta-data"]
        .iter()
        .chain(path)
        .copied()
        .collect();
    match loaded.tree.lookup(&segments).map(|entry| entry.body) {
        Some(Body::Static(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Some(Body::RequesterAddress) => requester
            .take()
            .map(|address| address().to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn document(
    loaded: &LoadedInstance,
    version: &str,
    requester: impl FnOnce() -> IpAddr,
) -> Result<Answer, ApiError> {
    let instance = loaded.tree.instance().ok_or_else(|| {
        tracing::error!(instance = %loaded.uuid, "cached record unreadable; no identity document");
        ApiError::Internal
    })?;
    let mut requester = Some(requester);
    let mut leaf = |path: &[&str]| leaf(loaded, version, path, &mut requester);
    let doc = Document {
        account_id: &instance.project_id,
        availability_zone: leaf(&["placement", "availability-zone"]),
        image_id: leaf(&["ami-id"]),
        instance_id: leaf(&["instance-id"]),
        instance_type: leaf(&["instance-type"]),
        private_ip: leaf(&["local-ipv4"]),
        version: DOCUMENT_VERSION,
    };
    let text = serde_json::to_string_pretty(&doc).map_err(|e| {
        tracing::error!("identity document: {e}");
        ApiError::Internal
    })?;
    Ok(plain(ContentType::Text, text))
}
