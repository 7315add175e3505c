//! Forwarding to a metadata API served over HTTPS (Nova with
//! `nova_metadata_protocol = https`): verified against a given CA, or not
//! verified when the operator says so (`nova_metadata_insecure`).

mod common;

use meta169_agent::index::{Index, Target};
use meta169_agent::Upstream;
use meta169_agent::{guest_service, Proxy};
use meta169_http::ServerLimits;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An HTTPS server that answers with the identity headers it received.
async fn https_api(dir: &Path) -> String {
    use tokio_rustls::rustls;
    let certs =
        rustls_pemfile::certs(&mut std::fs::read(dir.join("server.pem")).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key =
        rustls_pemfile::private_key(&mut std::fs::read(dir.join("server.key")).unwrap().as_slice())
            .unwrap()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |r: http::Request<hyper::body::Incoming>| async move {
                        let h = |n: &str| {
                            r.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let body = format!(
                            "{} {} {}",
                            h("x-instance-id"),
                            h("x-tenant-id"),
                            h("x-forwarded-for")
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}

async fn agent_listener(upstream: Upstream) -> String {
    let proxy = Proxy::new(&upstream).unwrap();
    let mut index = Index::default();
    index.insert(
        "net-tls",
        [0xfa, 0x16, 0x3e, 0, 0, 1],
        &["127.0.0.1".parse::<IpAddr>().unwrap()],
        Target {
            instance_id: "inst-tls".into(),
            project_id: "proj-tls".into(),
        },
    );
    proxy.set_index(index);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let router = guest_service(Arc::new(proxy), Arc::from("net-tls"));
    tokio::spawn(meta169_http::serve(
        l,
        router,
        ServerLimits::default(),
        std::future::pending(),
    ));
    url
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_given_ca() {
    let dir = meta169_testkit::temp_dir();
    meta169_testkit::make_pki(dir.path(), &["server"], Some("IP:127.0.0.1"));
    let api = https_api(dir.path()).await;
    let upstream = |ca: Option<&str>, insecure: bool| Upstream {
        url: api.clone(),
        shared_secret: common::SECRET.to_vec(),
        timeout: Duration::from_secs(5),
        insecure,
        ca_cert: ca.map(|c| dir.path().join(c)),
        pipelining: meta169_agent::Pipelining::Auto,
    };
    // Verified with the CA that signed the server.
    let url = agent_listener(upstream(Some("ca.pem"), false)).await;
    let r = reqwest::get(format!("{url}/latest/meta-data/instance-id"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "inst-tls proj-tls 127.0.0.1");
    // Without that CA the server is not trusted: the guest gets 503.
    let url = agent_listener(upstream(None, false)).await;
    assert_eq!(
        reqwest::get(format!("{url}/latest/meta-data/instance-id"))
            .await
            .unwrap()
            .status(),
        503
    );
    // A CA file that cannot be read is an error at start, not a silent fallback.
    let err = Proxy::new(&upstream(Some("missing.pem"), false))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot read the upstream CA bundle"),
        "{err}"
    );
    // Unless verification is switched off, as nova_metadata_insecure does.
    let url = agent_listener(upstream(None, true)).await;
    assert_eq!(
        reqwest::get(format!("{url}/latest/meta-data/instance-id"))
            .await
            .unwrap()
            .status(),
        200
    );
}
