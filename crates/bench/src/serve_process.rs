//! `meta169 serve` and the bare baseline as separate processes pinned to
//! the server core, for the pinned method: the real binary with a real
//! configuration, started through testkit and stopped by its pid.

use crate::measure::meta169_binary;
use crate::pinned::pinned;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use meta169_testkit::{free_port, wait_for_tcp, Process};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The shared secret the signed headers are made with.
pub const SECRET: &str = "bench-secret";

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process under test.
pub struct Server {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> Result<u32> {
        self.process.pid().context("the server is not running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn wait_listening(mut process: Process, addr: SocketAddr, log: &Path) -> Result<Server> {
    if !wait_for_tcp(addr, START_TIMEOUT) || process.exited().is_some() {
        bail!(
            "the server did not start: {}",
            meta169_testkit::read_log(log)
        );
    }
    Ok(Server { process, addr })
}

/// `meta169 serve` on the server core, signed identity (as behind
/// Neutron's agent), `serve_keys` added to its `[serve]` section.
pub fn start_serve(dir: &Path, name: &str, store: &str, serve_keys: &str) -> Result<Server> {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET)?;
    let config = dir.join(format!("{name}.toml"));
    // No operations listener unless the caller asks for one.
    let ops = if serve_keys.contains("ops_listen") {
        ""
    } else {
        "ops_listen = \"\"\n"
    };
    std::fs::write(
        &config,
        format!(
            "[serve]\naccess_log = \"off\"\n{ops}{serve_keys}\n\
             [serve.identity]\nsigned = true\nby_address = false\nby_source = false\n\
             shared_secret_file = \"{}\"\n",
            secret.display()
        ),
    )?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut command = pinned(&meta169_binary()?);
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--store", store, "--listen", &addr.to_string()])
        .env("RUST_LOG", "warn");
    let process = Process::start(name, command, dir);
    wait_listening(process, addr, &dir.join(format!("{name}.log")))
}

/// The baseline of perf-method.md on the server core: hyper on a
/// current-thread runtime answering every request with `body`.
pub fn start_bare(dir: &Path, name: &str, body: &Bytes, content_type: &str) -> Result<Server> {
    let body_file = dir.join(format!("{name}.body"));
    std::fs::write(&body_file, body)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut command = pinned(&std::env::current_exe()?);
    command
        .arg("bare-server")
        .args([
            "--listen",
            &addr.to_string(),
            "--content-type",
            content_type,
        ])
        .arg("--body-file")
        .arg(&body_file);
    let process = Process::start(name, command, dir);
    wait_listening(process, addr, &dir.join(format!("{name}.log")))
}

/// The three signed proxy headers and `X-Forwarded-For`, as Neutron's
/// agent sends them, for `instance`.
pub fn signed_headers(instance: &meta169_tree::Instance) -> Vec<(String, String)> {
    vec![
        ("X-Instance-ID".into(), instance.uuid.clone()),
        ("X-Tenant-ID".into(), instance.project_id.clone()),
        (
            "X-Instance-ID-Signature".into(),
            meta169_http::signing::sign_instance_id(SECRET.as_bytes(), &instance.uuid),
        ),
        ("X-Forwarded-For".into(), "10.0.0.5".into()),
    ]
}

/// `GET path` once: the body and content type a server answers with.
pub async fn sample(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(Bytes, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::get(path).header(http::header::HOST, "169.254.169.254");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = sender
        .send_request(request.body(http_body_util::Empty::<Bytes>::new())?)
        .await?;
    if response.status() != http::StatusCode::OK {
        bail!("{path} answered {}", response.status());
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    Ok((
        response.into_body().collect().await?.to_bytes(),
        content_type,
    ))
}
