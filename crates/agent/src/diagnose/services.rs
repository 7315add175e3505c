//! The services' part: what the running agent's index says about the
//! guest (over its status socket), and whether the metadata API answers
//! (through the agent's own upstream client, with its TLS settings).

use super::{Diagnosis, Step, QUERY_TIMEOUT};
use crate::settings::AgentSettings;
use crate::upstream::UpstreamClient;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

async fn status_get(socket: &Path, path: &str) -> Result<Value, String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "agent")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(QUERY_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

pub async fn check(settings: &AgentSettings, network: &str, ip: IpAddr, diagnosis: &mut Diagnosis) {
    match &settings.status_socket {
        Some(socket) => diagnosis.push(
            match status_get(socket, &format!("/v1/lookup?network={network}&ip={ip}")).await {
                Ok(v) if v["found"] == true => Step::holds(format!(
                    "the agent maps it to instance {} (project {})",
                    v["instance_id"], v["project_id"]
                )),
                Ok(_) => Step::fails(
                    "the agent's index has no entry for this address",
                    "is the port bound here with neutron:device_id and neutron:project_id in its external_ids?",
                ),
                Err(e) => Step::fails(
                    format!("agent status socket {}: {e}", socket.display()),
                    "is meta169 agent running (with this --status-socket)?",
                ),
            },
        ),
        None => diagnosis.push(Step::note("no status socket configured; index not checked")),
    }
    // The state /readyz answers from.
    if let Some(socket) = &settings.status_socket {
        if let Ok(status) = status_get(socket, "/v1/status").await {
            diagnosis.push(match status["not_ready_because"].as_str() {
                None => Step::holds("the agent is ready (Southbound read in full, listeners up)"),
                Some(why) => Step::fails(
                    format!("the agent is not ready: {why}"),
                    "see the agent's log; /readyz on its operations listener says the same",
                ),
            });
        }
    }
    let url = &settings.upstream.url;
    let client = match UpstreamClient::new(&settings.upstream) {
        Ok(client) => client,
        Err(e) => {
            diagnosis.push(Step::fails(
                format!("metadata API {url}: {e}"),
                "check the upstream settings",
            ));
            return;
        }
    };
    let answer = tokio::time::timeout(
        QUERY_TIMEOUT,
        client.send(http::Method::GET, "/", &[], Bytes::new()),
    )
    .await;
    diagnosis.push(match answer {
        Ok(Ok(a)) if a.status.is_success() => Step::holds(format!("metadata API {url} answers")),
        Ok(Ok(a)) => Step::fails(
            format!("metadata API {url} answered {}", a.status),
            "check the API's log",
        ),
        Ok(Err(e)) => Step::fails(
            format!("metadata API {url}: {e}"),
            "is meta169 serve (or nova-api-metadata) running there? check nova_metadata_host/port",
        ),
        Err(_) => Step::fails(
            format!("metadata API {url} did not answer within {QUERY_TIMEOUT:?}"),
            "check the API's log",
        ),
    });
}
