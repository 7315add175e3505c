//! Pipelined requests to the metadata API: many guests at once on fresh
//! connections each get their own instance's answers; an API that closes
//! connections midway or answers without Content-Length still answers
//! every guest; pipelining turns itself on only for meta169 serve.

mod common;

use common::{Api, SECRET};
use meta169_agent::index::{Index, Target};
use meta169_agent::{guest_service, Proxy};
use meta169_agent::{Pipelining, Upstream};
use meta169_http::ServerLimits;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NET: &str = "net-pipeline";

/// Guest `n`'s address: loopback has all of 127/8, so every guest can
/// connect from an address of its own.
fn guest(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (n / 250) as u8, 1 + (n % 250) as u8)
}

fn instance(n: usize) -> String {
    format!("inst-{n}")
}

/// The agent's proxy for `guests` guests, on the agent's own one-thread
/// runtime (driven by a thread of its own), listening on loopback.
fn agent(upstream: Upstream, guests: usize) -> (Arc<Proxy>, SocketAddr) {
    let proxy = Arc::new(Proxy::new(&upstream).unwrap());
    let mut index = Index::default();
    for n in 0..guests {
        index.insert(
            NET,
            [0xfa, 0x16, 0x3e, 0, (n / 256) as u8, (n % 256) as u8],
            &[IpAddr::V4(guest(n))],
            Target {
                instance_id: instance(n),
                project_id: "proj".into(),
            },
        );
    }
    proxy.set_index(index);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let router = guest_service(proxy.clone(), Arc::from(NET));
    std::thread::spawn(move || {
        let runtime = meta169_agent::runtime().unwrap();
        runtime.block_on(async move {
            meta169_http::serve(
                tokio::net::TcpListener::from_std(listener).unwrap(),
                router,
                ServerLimits::default(),
                std::future::pending(),
            )
            .await
        })
    });
    (proxy, addr)
}

fn upstream(url: &str, pipelining: Pipelining) -> Upstream {
    Upstream {
        url: url.into(),
        shared_secret: SECRET.to_vec(),
        timeout: Duration::from_secs(20),
        insecure: false,
        ca_cert: None,
        client_cert: None,
        client_key: None,
        pipelining,
    }
}

/// One GET from `source` on a fresh connection: status and body.
fn get(source: Ipv4Addr, target: SocketAddr, path: &str) -> Result<(u16, String), String> {
    meta169_testkit::http_get_from(
        source.into(),
        target,
        path,
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("{path}: {e}"))
}

/// `guests` guests, `threads` at a time, each asking `paths` on fresh
/// connections; every answer checked with `check(guest, path, status,
/// body)`. Returns the problems found.
fn storm(
    target: SocketAddr,
    guests: usize,
    threads: usize,
    paths: &'static [&'static str],
    check: fn(usize, &str, u16, &str) -> Option<String>,
) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, problems) = (next.clone(), problems.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= guests {
                    return;
                }
                for path in paths {
                    let problem = match get(guest(n), target, path) {
                        Ok((status, body)) => check(n, path, status, &body),
                        Err(e) => Some(format!("guest {n}: {e}")),
                    };
                    if let Some(problem) = problem {
                        problems.lock().unwrap().push(problem);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let problems = problems.lock().unwrap();
    problems.clone()
}

const BOOT_PATHS: &[&str] = &[
    "/openstack",
    "/openstack/2018-08-27/meta_data.json",
    "/openstack/2018-08-27/network_data.json",
    "/openstack/2018-08-27/vendor_data2.json",
    "/latest/meta-data/",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/hostname",
    "/latest/meta-data/local-ipv4",
    "/latest/meta-data/public-keys/",
    "/latest/meta-data/nothing-here",
];

/// Each guest must get its own instance: a mixed-up answer order on a
/// pipelined connection would hand one guest another's metadata.
fn own_instance(n: usize, path: &str, status: u16, body: &str) -> Option<String> {
    let expected_status = if path.ends_with("nothing-here") {
        404
    } else {
        200
    };
    if status != expected_status {
        return Some(format!("guest {n}: {path}: status {status}: {body}"));
    }
    let own_host = |name: &str| name.split('.').next() == Some(&format!("host-{n}"));
    let wrong = match path {
        "/latest/meta-data/hostname" => !own_host(body),
        "/openstack/2018-08-27/meta_data.json" => {
            let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            doc["uuid"] != instance(n) || !own_host(doc["hostname"].as_str().unwrap_or(""))
        }
        _ => false,
    };
    wrong.then(|| {
        format!(
            "guest {n}: {path}: another instance's answer: {}",
            &body[..body.len().min(120)]
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_guests_each_gets_its_own_instance() {
    const GUESTS: usize = 300;
    let api = Api::start().await;
    for n in 0..GUESTS {
        api.add(&instance(n), "proj", &format!("host-{n}")).await;
    }
    let (proxy, addr) = agent(upstream(&api.url, Pipelining::Auto), GUESTS);
    let problems =
        tokio::task::spawn_blocking(move || storm(addr, GUESTS, 48, BOOT_PATHS, own_instance))
            .await
            .unwrap();
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(
        proxy.pipelining(),
        "pipelining did not turn on for meta169 serve"
    );
}

/// A raw upstream: answers each request with the `X-Instance-ID` it
/// carried, framed as `framing` says, naming itself `server`, and after
/// `per_connection` answers closes the connection without warning,
/// whatever else was sent on it.
async fn raw_upstream(per_connection: usize, framing: Framing, server: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut answered = 0;
                let mut buf = [0u8; 8192];
                while answered < per_connection {
                    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
                    received.drain(..end + 4);
                    let id = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-instance-id: "))
                        .unwrap_or("?")
                        .to_string();
                    let answer = match framing {
                        Framing::Length => format!(
                            "HTTP/1.1 200 OK\r\nServer: {server}\r\nContent-Length: {}\r\n\r\n{id}",
                            id.len()
                        ),
                        Framing::Chunked => format!(
                            "HTTP/1.1 200 OK\r\nServer: {server}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{id}\r\n0\r\n\r\n",
                            id.len()
                        ),
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    answered += 1;
                }
            });
        }
    });
    url
}

#[derive(Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

fn answers_own_id(n: usize, path: &str, status: u16, body: &str) -> Option<String> {
    (status != 200 || body != instance(n)).then(|| format!("guest {n}: {path}: {status} {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_by_a_closing_upstream_are_sent_again() {
    let url = raw_upstream(3, Framing::Length, "meta169").await;
    let (proxy, addr) = agent(upstream(&url, Pipelining::On), 100);
    const PATHS: &[&str] = &["/a", "/b", "/c", "/d", "/e"];
    let problems = tokio::task::spawn_blocking(move || storm(addr, 100, 32, PATHS, answers_own_id))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(proxy.pipelining());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_chunked_turns_pipelining_off() {
    let url = raw_upstream(usize::MAX, Framing::Chunked, "meta169").await;
    let (proxy, addr) = agent(upstream(&url, Pipelining::On), 50);
    assert!(proxy.pipelining());
    const PATHS: &[&str] = &["/a", "/b", "/c"];
    let problems = tokio::task::spawn_blocking(move || storm(addr, 50, 16, PATHS, answers_own_id))
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        !proxy.pipelining(),
        "still pipelining to a chunked upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_pipelines_only_to_meta169() {
    let meta169 = raw_upstream(usize::MAX, Framing::Length, "meta169").await;
    let nova = raw_upstream(usize::MAX, Framing::Length, "Python/3.10 eventlet").await;
    let (auto_meta169, to_meta169) = agent(upstream(&meta169, Pipelining::Auto), 4);
    let (auto_nova, to_nova) = agent(upstream(&nova, Pipelining::Auto), 4);
    let (off, to_off) = agent(upstream(&meta169, Pipelining::Off), 4);
    assert!(
        !auto_meta169.pipelining(),
        "on before the upstream said who it is"
    );
    const PATHS: &[&str] = &["/a", "/b"];
    let problems = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        for addr in [to_meta169, to_nova, to_off] {
            problems.extend(storm(addr, 4, 2, PATHS, answers_own_id));
        }
        problems
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(auto_meta169.pipelining());
    assert!(!auto_nova.pipelining());
    assert!(!off.pipelining());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_to_an_api_that_never_answers_is_given_up() {
    use tokio::io::AsyncReadExt;
    // Reads requests, never answers, counts the connections the agent closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let mut frozen = upstream(&url, Pipelining::On);
    frozen.timeout = Duration::from_secs(1);
    let (_proxy, addr) = agent(frozen, 1);
    let (status, _) = tokio::task::spawn_blocking(move || get(guest(0), addr, "/openstack"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 504);
    // The lane holding the request lets go of its connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed.load(Ordering::Relaxed) >= 1,
        "the lane kept its connection"
    );
}
