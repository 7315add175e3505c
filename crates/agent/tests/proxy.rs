//! The guest-facing proxy over real sockets on loopback: forwarding with
//! signed headers, and the statuses Neutron's agent gives when the
//! metadata API is down, slow or answers oddly; the haproxy socket.

mod common;

use axum::routing::any;
use common::{Api, SECRET};
use meta169_agent::index::{Index, Target};
use meta169_agent::{guest_service, haproxy_service, Proxy};
use meta169_agent::{RateLimits, Upstream};
use meta169_http::ServerLimits;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const NET: &str = "net-proxy";

fn proxy_to(url: &str, timeout: Duration) -> Arc<Proxy> {
    proxy_with(url, timeout, None)
}

fn proxy_with(url: &str, timeout: Duration, limits: Option<RateLimits>) -> Arc<Proxy> {
    let mut proxy = Proxy::new(&Upstream {
        url: url.into(),
        shared_secret: SECRET.to_vec(),
        timeout,
        insecure: false,
        ca_cert: None,
        client_cert: None,
        client_key: None,
        pipelining: meta169_agent::Pipelining::Auto,
    })
    .unwrap();
    if let Some(limits) = limits {
        proxy = proxy.with_rate_limits(limits);
    }
    let mut index = Index::default();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    index.insert(
        NET,
        [0xfa, 0x16, 0x3e, 0, 0, 1],
        &[loopback],
        Target {
            instance_id: "inst-1".into(),
            project_id: "proj-1".into(),
        },
    );
    proxy.set_index(index);
    Arc::new(proxy)
}

/// A listener for network NET on loopback, as in a namespace.
async fn listener(proxy: Arc<Proxy>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let router = guest_service(proxy, Arc::from(NET));
    tokio::spawn(meta169_http::serve(
        l,
        router,
        ServerLimits::default(),
        std::future::pending(),
    ));
    url
}

/// An upstream that answers every request with `status` after `delay`.
async fn fake_upstream(status: u16, delay: Duration) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().fallback(any(move || async move {
        tokio::time::sleep(delay).await;
        (
            http::StatusCode::from_u16(status).unwrap(),
            "upstream says no",
        )
    }));
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

#[tokio::test]
async fn forwards_with_signed_headers_and_relays_the_answer() {
    let api = Api::start().await;
    api.add("inst-1", "proj-1", "proxied").await;
    let url = listener(proxy_to(&api.url, Duration::from_secs(5))).await;
    let r = reqwest::get(format!("{url}/latest/meta-data/hostname"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "proxied.novalocal");
    // A password POST goes through with its body.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/openstack/latest/password"))
        .body("cGFzcw==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client
            .get(format!("{url}/openstack/latest/password"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "cGFzcw=="
    );
    // Upstream statuses in Neutron's set are relayed.
    let r = reqwest::get(format!("{url}/latest/meta-data/nothing"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // An oversized body is refused before it reaches the API.
    let r = client
        .post(format!("{url}/openstack/latest/password"))
        .body(vec![b'x'; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn upstream_failures_get_neutrons_statuses() {
    // Nothing listens: 503 with Neutron's message, at once, and a
    // Retry-After that cloud-init 25.1 and later honour.
    let port = meta169_testkit::free_port();
    let closed = format!("http://127.0.0.1:{port}");
    let url = listener(proxy_to(&closed, Duration::from_secs(5))).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let r = client.get(format!("{url}/openstack")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the connect timeout, not after it"
    );
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("The remote metadata server is temporarily unavailable."));
    // The API comes back on the same address: the same listener answers
    // 200 with nothing restarted.
    let back = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let app = axum::Router::new().fallback(any(|| async { "back" }));
    tokio::spawn(async move { axum::serve(back, app).await });
    let r = client.get(format!("{url}/openstack")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "back");

    // A status Neutron's agent does not relay: 502, never the raw status.
    let odd = fake_upstream(418, Duration::ZERO).await;
    let url = listener(proxy_to(&odd, Duration::from_secs(5))).await;
    assert_eq!(
        reqwest::get(format!("{url}/openstack"))
            .await
            .unwrap()
            .status(),
        502
    );

    // 403 (secrets differ) is relayed.
    let refused = fake_upstream(403, Duration::ZERO).await;
    let url = listener(proxy_to(&refused, Duration::from_secs(5))).await;
    assert_eq!(
        reqwest::get(format!("{url}/openstack"))
            .await
            .unwrap()
            .status(),
        403
    );

    // Too slow: 504 within the configured time, never a hang.
    let slow = fake_upstream(200, Duration::from_secs(30)).await;
    let url = listener(proxy_to(&slow, Duration::from_millis(500))).await;
    let started = std::time::Instant::now();
    assert_eq!(
        reqwest::get(format!("{url}/openstack"))
            .await
            .unwrap()
            .status(),
        504
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn guests_over_the_rate_limit_get_429_with_a_body() {
    let api = Api::start().await;
    api.add("inst-1", "proj-1", "limited").await;
    let limits = RateLimits {
        base_limit: 5,
        burst_window: Duration::from_secs(1),
        burst_limit: 5,
        ..RateLimits::default()
    };
    let url = listener(proxy_with(&api.url, Duration::from_secs(5), Some(limits))).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = client
            .get(format!("{url}/latest/meta-data/hostname"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.text().await.unwrap().contains("too many requests"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn unknown_guests_get_404_with_a_body() {
    let api = Api::start().await;
    let proxy = proxy_to(&api.url, Duration::from_secs(5));
    proxy.set_index(Index::default());
    let url = listener(proxy).await;
    let r = reqwest::get(format!("{url}/openstack")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(&format!("Instance was not found on network {NET}.")));
}

#[tokio::test]
async fn haproxy_socket_takes_network_and_address_from_headers() {
    let api = Api::start().await;
    api.add("inst-1", "proj-1", "via-haproxy").await;
    let proxy = proxy_to(&api.url, Duration::from_secs(5));
    let dir = meta169_testkit::temp_dir();
    let path = dir.path().join("metadata_proxy");
    let unix = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(meta169_http::serve(
        unix,
        haproxy_service(proxy),
        ServerLimits::default(),
        std::future::pending(),
    ));
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut request =
                http::Request::get("/latest/meta-data/hostname").header("host", "169.254.169.254");
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let response = sender
                .send_request(
                    request
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // haproxy adds its X-Forwarded-For after any the guest sent: the last one counts.
    assert_eq!(
        ask(vec![
            ("X-OVN-Network-ID", NET),
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-For", "127.0.0.1")
        ])
        .await,
        (200, "via-haproxy.novalocal".to_string())
    );
    assert_eq!(ask(vec![("X-Forwarded-For", "127.0.0.1")]).await.0, 400);
    assert_eq!(
        ask(vec![
            ("X-OVN-Network-ID", "other"),
            ("X-Forwarded-For", "127.0.0.1")
        ])
        .await
        .0,
        404
    );
}

/// An upstream that answers `answers` requests per connection, each
/// "ok", and closes the connection without saying so after the last one
/// or when it has been idle for `idle`.
async fn closing_upstream(answers: usize, idle: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                for _ in 0..answers {
                    match tokio::time::timeout(idle, s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Five guest requests through a proxy to `upstream`, `pause` apart (time
/// for the upstream to close the connection the proxy pooled): each must
/// get the upstream's "ok". A request stuck on a dead connection would end
/// as a 504 after the 3 s upstream timeout.
async fn five_requests_answered(upstream: &str, pause: Duration) {
    let url = listener(proxy_to(upstream, Duration::from_secs(3))).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = client
            .get(format!("{url}/latest/meta-data/instance-id"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_not_waited_on() {
    // A keep-alive timeout: pooled connections die while idle.
    let upstream = closing_upstream(usize::MAX, Duration::from_millis(100)).await;
    five_requests_answered(&upstream, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_pooled_connection_the_api_closed_is_retried_on_a_new_one() {
    // One answer per connection: every pooled connection is dead when next used.
    let upstream = closing_upstream(1, Duration::from_secs(10)).await;
    five_requests_answered(&upstream, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn session_tokens_pass_through_to_the_metadata_api() {
    let api = Api::start().await;
    // This instance requires tokens (its record says so).
    let mut instance = meta169_tree::example_instance();
    instance.uuid = "inst-1".into();
    instance.project_id = "proj-1".into();
    instance.hostname = "tokened".into();
    instance.metadata_tokens = Some(meta169_tree::TokenMode::Required);
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/v1/instances/inst-1", api.admin))
        .bearer_auth("t")
        .json(&instance)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let url = listener(proxy_to(&api.url, Duration::from_secs(5))).await;
    let hostname = format!("{url}/latest/meta-data/hostname");

    // Without a token: the API's 401 reaches the guest, with its reason.
    let r = client.get(&hostname).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("PUT /latest/api/token"));
    // The token request and its lifetime go through, and the lifetime comes back.
    let r = client
        .put(format!("{url}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aws-ec2-metadata-token-ttl-seconds"], "300");
    let token = r.text().await.unwrap();
    let r = client
        .get(&hostname)
        .header("X-aws-ec2-metadata-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tokened.novalocal");
    // Asked for with GET: the API's 405.
    let r = client
        .get(format!("{url}/latest/api/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Relayed by a proxy inside the guest: refused here, in any letter case.
    for name in ["X-Forwarded-For", "x-FORWARDED-for"] {
        let r = client
            .put(format!("{url}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .header(name, "172.17.0.2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
        assert!(r.text().await.unwrap().contains("X-Forwarded-For"));
    }
}
