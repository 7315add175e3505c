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
    https_api_with(dir, false).await
}

/// The same, optionally requiring a client certificate signed by the CA.
async fn https_api_with(dir: &Path, client_auth: bool) -> String {
    use tokio_rustls::rustls;
    let certs =
        rustls_pemfile::certs(&mut std::fs::read(dir.join("server.pem")).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key =
        rustls_pemfile::private_key(&mut std::fs::read(dir.join("server.key")).unwrap().as_slice())
            .unwrap()
            .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut std::fs::read(dir.join("ca.pem")).unwrap().as_slice())
        {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
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
        client_cert: None,
        client_key: None,
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

#[tokio::test]
async fn a_nova_requiring_client_certificates_gets_the_configured_one() {
    let dir = meta169_testkit::temp_dir();
    meta169_testkit::make_pki(dir.path(), &["server", "client"], Some("IP:127.0.0.1"));
    let api = https_api_with(dir.path(), true).await;
    let upstream = |client: bool| Upstream {
        url: api.clone(),
        shared_secret: common::SECRET.to_vec(),
        timeout: Duration::from_secs(5),
        insecure: false,
        ca_cert: Some(dir.path().join("ca.pem")),
        client_cert: client.then(|| dir.path().join("client.pem")),
        client_key: client.then(|| dir.path().join("client.key")),
        pipelining: meta169_agent::Pipelining::Auto,
    };
    // nova_client_cert and nova_client_priv_key given: served.
    let url = agent_listener(upstream(true)).await;
    let r = reqwest::get(format!("{url}/latest/meta-data/instance-id"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "inst-tls proj-tls 127.0.0.1");
    // Without them the API refuses the handshake: the guest gets 503.
    let url = agent_listener(upstream(false)).await;
    let r = reqwest::get(format!("{url}/latest/meta-data/instance-id"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // A certificate without its key is an error at start.
    let mut half = upstream(true);
    half.client_key = None;
    let err = Proxy::new(&half).err().unwrap().to_string();
    assert!(err.contains("nova_client_priv_key"), "{err}");
}
