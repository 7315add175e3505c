//! The metadata API over real HTTP: both trees, every identity mode, the
//! password flow, vendordata2 against a live target, and hostile input.

mod common;

use common::{TestApi, ADMIN_TOKEN, SECRET};
use meta169_api::signing::sign_instance_id;
use meta169_api::{ApiSettings, DynamicTarget, ServerLimits};
use meta169_tree::{example_instance, Instance};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

/// Crawl an EC2 listing the way cloud-init does; return every leaf path.
async fn crawl(api: &TestApi, url: &str, leaves: &mut BTreeSet<String>) {
    let body = api.ok(url).await;
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(dir) = line.strip_suffix('/') {
            Box::pin(crawl(api, &format!("{url}{dir}/"), leaves)).await;
        } else if let Some((index, _name)) = line.split_once('=') {
            let key = format!("{url}{index}/openssh-key");
            api.ok(&key).await;
            // The directory itself answers with and without the slash.
            assert_eq!(api.ok(&format!("{url}{index}")).await, "openssh-key");
            leaves.insert(key);
        } else {
            let leaf = format!("{url}{line}");
            let value = api.ok(&leaf).await;
            // Leaves answer with a trailing slash too (botocore asks so).
            assert_eq!(api.ok(&format!("{leaf}/")).await, value, "{leaf}/");
            leaves.insert(leaf);
        }
    }
}

#[tokio::test]
async fn every_ec2_path_of_two_versions() {
    let api = TestApi::standalone().await;
    let i = example_instance();
    for version in ["latest", "2009-04-04", "2007-12-15"] {
        let mut leaves = BTreeSet::new();
        crawl(&api, &format!("/{version}/meta-data/"), &mut leaves).await;
        assert!(leaves.len() >= 14, "{version}: {leaves:?}");
        assert_eq!(
            api.ok(&format!("/{version}/meta-data/instance-id")).await,
            "i-00000042"
        );
        assert_eq!(
            api.ok(&format!("/{version}/meta-data/hostname")).await,
            "demo.novalocal"
        );
        assert_eq!(
            api.ok(&format!("/{version}/meta-data/public-keys/0/openssh-key"))
                .await,
            i.public_keys["demo-key"]
        );
        assert_eq!(
            api.ok(&format!("/{version}/user-data")).await.as_bytes(),
            i.user_data.as_deref().unwrap()
        );
        assert_eq!(
            api.ok(&format!("/{version}")).await,
            "meta-data/\nuser-data"
        );
        // /ec2/<v>/... is the same tree.
        assert_eq!(
            api.ok(&format!("/ec2/{version}/meta-data/instance-id"))
                .await,
            "i-00000042"
        );
    }
    // EC2's instance identity document (cloud-init's AWS mode reads it),
    // under every version but not in Nova's version listing above.
    for version in ["latest", "2009-04-04"] {
        assert_eq!(
            api.ok(&format!("/{version}/dynamic/")).await,
            "instance-identity/"
        );
        assert_eq!(
            api.ok(&format!("/{version}/dynamic/instance-identity/"))
                .await,
            "document"
        );
        let doc: Value = serde_json::from_str(
            &api.ok(&format!("/{version}/dynamic/instance-identity/document"))
                .await,
        )
        .unwrap();
        assert_eq!(doc["instanceId"], "i-00000042");
        assert_eq!(doc["accountId"], i.project_id.as_str());
        assert_eq!(doc["availabilityZone"], "nova");
        assert_eq!(doc["imageId"], "ami-0000001a");
        assert_eq!(doc["instanceType"], "m1.small");
        assert_eq!(doc["privateIp"], "127.0.0.1");
    }
    for missing in [
        "/latest/dynamic/instance-identity/pkcs7",
        "/latest/dynamic/other",
        "/1999-01-01/dynamic/instance-identity/document",
        "/openstack/latest/dynamic/instance-identity/document",
    ] {
        assert_eq!(api.get(missing).await.0, 404, "{missing}");
    }
    assert!(api.ok("/latest/meta-data/placement/").await == "availability-zone");
    assert_eq!(
        api.get("/2007-12-15/meta-data/placement/availability-zone")
            .await
            .0,
        404
    );
    assert!(api.ok("/").await.ends_with("2009-04-04\nlatest"));
    assert!(api.ok("/ec2").await.ends_with("2009-04-04\nlatest"));
}

#[tokio::test]
async fn every_openstack_path_of_two_versions() {
    let api = TestApi::standalone().await;
    let i = example_instance();
    let versions = api.ok("/openstack").await;
    assert!(versions.contains("2018-08-27\n") && versions.ends_with("\nlatest"));
    for version in ["2012-08-10", "2018-08-27", "latest"] {
        let files = api.ok(&format!("/openstack/{version}/")).await;
        for file in files.lines() {
            let r = api
                .http
                .get(format!("{}/openstack/{version}/{file}", api.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{version}/{file}");
            let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
            let body = r.bytes().await.unwrap();
            if file.ends_with(".json") && file != "network_data.json" {
                assert_eq!(ctype, "application/json", "{file}");
            }
            if file.ends_with(".json") {
                let _: Value =
                    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
        let md: Value = serde_json::from_str(
            &api.ok(&format!("/openstack/{version}/meta_data.json"))
                .await,
        )
        .unwrap();
        assert_eq!(md["uuid"], i.uuid);
        assert_eq!(md["hostname"], "demo.novalocal");
        assert_eq!(md["public_keys"]["demo-key"], i.public_keys["demo-key"]);
        assert_eq!(md["meta"]["role"], "webserver");
        if version == "2012-08-10" {
            assert!(md.get("random_seed").is_none() && md.get("project_id").is_none());
            assert_eq!(files, "meta_data.json\nuser_data");
        } else {
            assert_eq!(md["project_id"], i.project_id);
            let seed = md["random_seed"].as_str().unwrap();
            assert_eq!(seed.len(), 684);
            // Base64 of 512 bytes, as Nova's b64encode(os.urandom(512)).
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(seed)
                .unwrap();
            assert_eq!(raw.len(), 512);
            assert_eq!(
                files,
                "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"
            );
        }
        let nd: Value = serde_json::from_str(
            &api.ok(&format!("/openstack/{version}/network_data.json"))
                .await,
        )
        .unwrap();
        assert_eq!(nd, i.network_data.clone().unwrap());
        assert_eq!(
            api.ok(&format!("/openstack/{version}/user_data"))
                .await
                .as_bytes(),
            i.user_data.as_deref().unwrap()
        );
    }
    // A fresh random seed on every request, as Nova does.
    let a: Value = serde_json::from_str(&api.ok("/openstack/latest/meta_data.json").await).unwrap();
    let b: Value = serde_json::from_str(&api.ok("/openstack/latest/meta_data.json").await).unwrap();
    assert_ne!(a["random_seed"], b["random_seed"]);
    assert_eq!(api.ok("/openstack/latest/vendor_data.json").await, "{}");
    assert_eq!(
        api.ok("/openstack/latest/vendor_data2.json").await,
        "{\"static\": {}}"
    );
}

#[tokio::test]
async fn statuses_for_unknown_things_are_novas() {
    let api = TestApi::standalone().await;
    for path in [
        "/2021-03-23/meta-data/instance-id",
        "/2018-09-24/meta-data/instance-id",
        "/2016-09-02/meta-data/instance-id",
        "/latest/meta-data/nothing",
        "/latest/meta-data/hostname/child",
        "/latest/meta-data/security-groups/default",
        "/openstack/2099-01-01/meta_data.json",
        "/openstack/latest/nothing.json",
        "/openstack/content/0000",
        "/openstack/2012-08-10/password",
        "/openstack/2013-04-04/vendor_data.json",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!body.is_empty(), "{path}: error bodies are never empty");
    }
    // botocore's token request is answered (tokens: tokens_are_issued_and_checked).
    let r = api
        .http
        .put(format!("{}/latest/api/token", api.base))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Any method but on password is served as GET.
    let r = api
        .http
        .post(format!("{}/latest/meta-data/hostname", api.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "demo.novalocal");
    let r = api
        .http
        .delete(format!("{}/openstack/latest/meta_data.json", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // HEAD: the headers of GET, no body.
    let r = api
        .http
        .head(format!("{}/latest/meta-data/hostname", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "14");
    // What tells meta169's agent it may pipeline (errors carry it too).
    assert_eq!(r.headers()["server"], "meta169");
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = api
        .http
        .get(format!("{}/no-such-thing", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["server"], "meta169");
}

#[tokio::test]
async fn unknown_source_address_is_404() {
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    let api = TestApi::start(settings, ServerLimits::default()).await;
    // No instance has 127.0.0.1 yet.
    let (status, body) = api.get("/latest/meta-data/instance-id").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("No instance has the address 127.0.0.1"),
        "{body}"
    );
    // "/" needs no identity.
    assert_eq!(api.get("/").await.0, 200);
}

fn signed_settings() -> ApiSettings {
    let mut settings = ApiSettings::default();
    settings.identity.shared_secret = SECRET.to_vec();
    settings
}

#[tokio::test]
async fn signed_headers_identify_and_check_the_project() {
    let api = TestApi::start(signed_settings(), ServerLimits::default()).await;
    let i = example_instance();
    api.add(&i).await;
    let url = format!("{}/openstack/latest/meta_data.json", api.base);
    let sig = sign_instance_id(SECRET, &i.uuid);
    let r = api
        .http
        .get(&url)
        .header("X-Instance-ID", &i.uuid)
        .header("X-Tenant-ID", &i.project_id)
        .header("X-Instance-ID-Signature", &sig)
        .header("X-Forwarded-For", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let md: Value = r.json().await.unwrap();
    assert_eq!(md["uuid"], i.uuid);

    let status = |tenant: &'static str, sig: String| {
        let (http, url, uuid) = (api.http.clone(), url.clone(), i.uuid.clone());
        async move {
            let r = http
                .get(&url)
                .header("X-Instance-ID", uuid)
                .header("X-Tenant-ID", tenant)
                .header("X-Instance-ID-Signature", sig)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, body) = status("other-project", sig.clone()).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = status("f7ac731cc11f40efbc03a9f9e1d1d21f", "0".repeat(64)).await;
    assert_eq!(code, 403);
    assert!(body.contains("Invalid proxy request signature."));
    // No headers at all: Nova's 400.
    let (code, body) = api.get("/openstack/latest/meta_data.json").await;
    assert_eq!(code, 400);
    assert!(body.contains("X-Instance-ID header is missing from request."));
    // Unknown instance, properly signed: 404.
    let r = api
        .http
        .get(&url)
        .header("X-Instance-ID", "nope")
        .header("X-Tenant-ID", "p")
        .header("X-Instance-ID-Signature", sign_instance_id(SECRET, "nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn network_headers_identify_by_port_even_on_overlapping_subnets() {
    let api = TestApi::start(signed_settings(), ServerLimits::default()).await;
    let mut a = example_instance();
    a.uuid = "aaaaaaaa-0000-0000-0000-000000000001".into();
    a.ec2_instance_id = None;
    a.ports[0].network_id = "net-a".into();
    a.ports[0].ips = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
    let mut b = a.clone();
    b.uuid = "bbbbbbbb-0000-0000-0000-000000000002".into();
    b.ports[0].network_id = "net-b".into();
    b.ports[0].mac = "fa:16:3e:00:00:bb".into();
    api.add(&a).await;
    api.add(&b).await;
    let ask = |header: &'static str, net: &'static str, xff: &'static str| {
        let (http, base) = (api.http.clone(), api.base.clone());
        async move {
            let r = http
                .get(format!("{base}/latest/meta-data/instance-id"))
                .header(header, net)
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        ask("X-OVN-Network-ID", "net-a", "10.0.0.5").await,
        (200, "i-aaaaaaaa".into())
    );
    assert_eq!(
        ask("X-OVN-Network-ID", "net-b", "10.0.0.5").await,
        (200, "i-bbbbbbbb".into())
    );
    assert_eq!(
        ask("X-Neutron-Network-ID", "net-b", "10.0.0.5").await,
        (200, "i-bbbbbbbb".into())
    );
    // IPv6 link-local guests are found by the MAC in their EUI-64 address.
    assert_eq!(
        ask("X-OVN-Network-ID", "net-b", "fe80::f816:3eff:fe00:bb").await,
        (200, "i-bbbbbbbb".into())
    );
    let (code, body) = ask("X-OVN-Network-ID", "net-c", "10.0.0.5").await;
    assert_eq!(code, 404);
    assert!(
        body.contains("Instance was not found on network net-c."),
        "{body}"
    );
    // The requester address feeds local-ipv4 only when no fixed IPv4 exists;
    // here the port's own address is used.
    assert_eq!(
        api.http
            .get(format!("{}/latest/meta-data/local-ipv4", api.base))
            .header("X-OVN-Network-ID", "net-a")
            .header("X-Forwarded-For", "10.0.0.5")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "10.0.0.5"
    );
}

#[tokio::test]
async fn identity_headers_from_untrusted_peers_are_ignored() {
    let mut settings = signed_settings();
    settings.identity.trusted_proxies = vec![];
    let api = TestApi::start(settings.clone(), ServerLimits::default()).await;
    let i = example_instance();
    api.add(&i).await;
    let r = api
        .http
        .get(format!("{}/latest/meta-data/instance-id", api.base))
        .header("X-Instance-ID", &i.uuid)
        .header("X-Tenant-ID", &i.project_id)
        .header("X-Instance-ID-Signature", sign_instance_id(SECRET, &i.uuid))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("not a trusted proxy"));

    // With source identification on, the headers are ignored and the peer
    // address decides: a guest cannot claim another instance.
    settings.identity.by_source = true;
    let api = TestApi::start(settings, ServerLimits::default()).await;
    let mut other = example_instance();
    other.uuid = "other".into();
    other.ports[0].ips = vec!["10.1.1.1".parse().unwrap()];
    api.add(&i).await;
    api.add(&other).await;
    let r = api
        .http
        .get(format!("{}/openstack/latest/meta_data.json", api.base))
        .header("X-Instance-ID", "other")
        .header("X-Tenant-ID", &i.project_id)
        .header("X-Instance-ID-Signature", sign_instance_id(SECRET, "other"))
        .header("X-OVN-Network-ID", &i.ports[0].network_id)
        .header("X-Forwarded-For", "10.1.1.1")
        .send()
        .await
        .unwrap();
    let md: Value = r.json().await.unwrap();
    assert_eq!(md["uuid"], i.uuid);
}

#[tokio::test]
async fn password_flow_is_novas() {
    let api = TestApi::standalone().await;
    let url = format!("{}/openstack/latest/password", api.base);
    assert_eq!(api.ok("/openstack/latest/password").await, "");
    let too_big = api
        .http
        .post(&url)
        .body("x".repeat(1021))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 400);
    assert!(too_big
        .text()
        .await
        .unwrap()
        .contains("Request is too large."));
    let r = api
        .http
        .post(&url)
        .body("ZW5jcnlwdGVk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        api.ok("/openstack/2013-04-04/password").await,
        "ZW5jcnlwdGVk"
    );
    let again = api.http.post(&url).body("other").send().await.unwrap();
    assert_eq!(again.status(), 409);
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::HEAD,
    ] {
        let r = api.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), 400, "{method}");
    }
    // The administrator reads and clears it; then the guest may post again.
    let uuid = example_instance().uuid;
    let admin_url = format!("{}/v1/instances/{uuid}/password", api.admin);
    let shown: Value = api
        .http
        .get(&admin_url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["password"], "ZW5jcnlwdGVk");
    let cleared = api
        .http
        .delete(&admin_url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(api.ok("/openstack/latest/password").await, "");
    let r = api
        .http
        .post(&url)
        .body("x".repeat(1020))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A vendordata target started by the test: answers JSON and records what
/// it was sent.
async fn start_target(
    behaviour: &'static str,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: http::HeaderMap, body: axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let agent = headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send((agent, body.0));
                match behaviour {
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (http::StatusCode::OK, "{}".to_string())
                    }
                    "broken" => (http::StatusCode::INTERNAL_SERVER_ERROR, "oops".to_string()),
                    _ => (
                        http::StatusCode::OK,
                        r#"{"value1": 1, "value3": "three"}"#.to_string(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn vendordata2_calls_targets_and_leaves_failures_out() {
    let (good, mut seen) = start_target("good").await;
    let (slow, _) = start_target("slow").await;
    let (broken, _) = start_target("broken").await;
    let refused = format!("http://127.0.0.1:{}/", meta169_testkit::free_port());
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    settings.render.vendor_static = Some(std::sync::Arc::new(
        serde_json::json!({"cloud-init": "#cloud-config\n"}),
    ));
    settings.dynamic_targets = [
        ("testing", &good),
        ("slow", &slow),
        ("broken", &broken),
        ("down", &refused),
    ]
    .iter()
    .map(|(n, u)| DynamicTarget::parse(&format!("{n}@{u}")).unwrap())
    .collect();
    settings.dynamic_connect_timeout = Duration::from_millis(500);
    settings.dynamic_read_timeout = Duration::from_millis(500);
    let api = TestApi::start(settings, ServerLimits::default()).await;
    let i = example_instance();
    api.add(&i).await;
    let started = std::time::Instant::now();
    let doc: Value =
        serde_json::from_str(&api.ok("/openstack/latest/vendor_data2.json").await).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a slow target must not hold the answer"
    );
    assert_eq!(
        doc,
        serde_json::json!({"static": {"cloud-init": "#cloud-config\n"}, "testing": {"value1": 1, "value3": "three"}})
    );
    let (agent, body) = seen.recv().await.unwrap();
    assert_eq!(agent, "openstack-nova-vendordata");
    assert_eq!(body["instance-id"], i.uuid);
    assert_eq!(body["project-id"], i.project_id);
    assert_eq!(body["hostname"], "demo.novalocal");
    assert_eq!(body["image-id"], i.image_id.clone().unwrap());
    assert_eq!(body["metadata"]["role"], "webserver");
    assert_eq!(body["boot-roles"], "");
    assert!(body["user-data"].is_string());
    assert_eq!(
        api.ok("/openstack/latest/vendor_data.json").await,
        "{\"cloud-init\": \"#cloud-config\\n\"}"
    );
}

/// A vendordata target that answers with an endless chunked JSON body and
/// reports how many bytes it managed to send before the caller hung up.
async fn endless_target() -> (String, tokio::sync::oneshot::Receiver<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_SENT: usize = 64 * 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (report, sent) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 64 * 1024];
        let _ = stream.read(&mut request).await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut total = 0;
        if stream.write_all(head).await.is_ok() {
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "1,".repeat(32 * 1024));
            while total < MAX_SENT && stream.write_all(chunk.as_bytes()).await.is_ok() {
                total += 64 * 1024;
            }
        }
        let _ = report.send(total);
    });
    (url, sent)
}

#[tokio::test]
async fn vendordata2_stops_reading_a_target_at_its_limit() {
    let (endless, sent) = endless_target().await;
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    settings.dynamic_targets = vec![DynamicTarget::parse(&format!("endless@{endless}")).unwrap()];
    settings.dynamic_read_timeout = Duration::from_secs(20);
    let api = TestApi::start(settings, ServerLimits::default()).await;
    api.add(&example_instance()).await;
    let doc: Value =
        serde_json::from_str(&api.ok("/openstack/latest/vendor_data2.json").await).unwrap();
    assert_eq!(doc, serde_json::json!({"static": {}}));
    // The answer is read up to the 1 MiB limit and the connection dropped:
    // what the target got out is that plus the sockets' buffers, far below
    // the 64 MiB it would send to a reader that reads everything first.
    let sent = sent.await.unwrap();
    assert!(sent < 16 * 1024 * 1024, "the target sent {sent} bytes");
}

/// Send raw bytes on a fresh connection; return the status code (0 = closed).
fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clear_4xx() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    let api = TestApi::start(settings, limits).await;
    api.add(&example_instance()).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid utf-8", b"GET /latest/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("nul", b"GET /latest/meta-data%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("dot-dot", b"GET /latest/../latest/meta-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        ("encoded dot-dot", b"GET /latest/%2e%2e/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (
            "long path",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a/".repeat(1500)).into_bytes(),
            400,
        ),
        (
            "huge header",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
        (
            "oversized password",
            format!(
                "POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
                "p".repeat(5000)
            )
            .into_bytes(),
            400,
        ),
    ];
    for (name, request, expected) in cases {
        let addr = addr.clone();
        let (code, text) = tokio::task::spawn_blocking(move || raw(&addr, &request))
            .await
            .unwrap();
        assert_eq!(code, expected, "{name}: {text}");
    }
    // What was wrong is what the answer says.
    let explained: [(&str, &[u8], &str); 2] = [
        (
            "no Host",
            b"GET /latest/meta-data HTTP/1.1\r\nConnection: close\r\n\r\n",
            "400 Bad Request",
        ),
        (
            "malformed chunked password",
            b"POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "could not be read",
        ),
    ];
    for (name, request, says) in explained {
        let addr = addr.clone();
        let (code, text) = tokio::task::spawn_blocking(move || raw(&addr, request))
            .await
            .unwrap();
        assert_eq!(code, 400, "{name}: {text}");
        assert!(text.contains(says), "{name}: {text}");
    }
    // A slow client that never finishes its headers is cut off.
    let addr2 = addr.clone();
    let started = std::time::Instant::now();
    let (code, _) = tokio::task::spawn_blocking(move || {
        raw(&addr2, b"GET /latest/meta-data HTTP/1.1\r\nHost: x\r\n")
    })
    .await
    .unwrap();
    assert!(code == 408 || code == 0, "slow client got {code}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still answers afterwards.
    assert_eq!(api.ok("/latest/meta-data/instance-id").await, "i-00000042");
}

#[tokio::test]
async fn admin_api_needs_its_token_and_explains_bad_input() {
    let api = TestApi::standalone().await;
    let url = format!("{}/v1/instances", api.admin);
    assert_eq!(api.http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        api.http
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The scheme matches in any letter case (RFC 9110).
    for scheme in ["bearer", "BEARER"] {
        let answer = api
            .http
            .get(&url)
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{scheme}");
    }
    let list: Value = api
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["uuid"], example_instance().uuid);

    let bad = api
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("not a valid record"));
    let unknown = api
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"uuid": "x", "name": "x", "hostname": "x", "project_id": "p", "colour": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("unknown field `colour`"));
    // A hand-written record: user data as text, no project.
    let written = api
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"uuid": "by-hand", "name": "web", "hostname": "web", "user_data_text": "hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201, "{}", written.text().await.unwrap());
    let record: Value = api
        .http
        .get(format!("{url}/by-hand"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["user_data"], "aGVsbG8=");
    assert_eq!(record["project_id"], "default");
    // Values that would corrupt what guests read are refused, saying why.
    let mut corrupt = serde_json::to_value(example_instance()).unwrap();
    corrupt["uuid"] = "other".into();
    corrupt["public_keys"] = serde_json::json!({"k1\n1=evil": "ssh-ed25519 AAAA"});
    let refused = api
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&corrupt)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let why = refused.text().await.unwrap();
    assert!(why.contains("`public_keys` name"), "{why}");
    let dup = api
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&example_instance())
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);

    // Replace: the change is visible to the guest at once.
    let mut changed: Instance = example_instance();
    changed.hostname = "renamed".into();
    api.add(&changed).await;
    assert_eq!(
        api.ok("/latest/meta-data/hostname").await,
        "renamed.novalocal"
    );

    // Ports replaced on their own: the old address stops answering.
    let ports_url = format!("{}/v1/instances/{}/ports", api.admin, changed.uuid);
    let r = api
        .http
        .put(&ports_url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!([{"network_id": "n", "mac": "fa:16:3e:00:00:09", "ips": ["10.3.3.3"]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(api.get("/latest/meta-data/hostname").await.0, 404);
    let del = api
        .http
        .delete(format!("{}/v1/instances/{}", api.admin, changed.uuid))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let gone = api
        .http
        .get(format!("{}/v1/instances/{}", api.admin, changed.uuid))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

const TOKEN_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

async fn token_api(mode: meta169_api::token::TokenMode) -> TestApi {
    let mut settings = ApiSettings::default();
    settings.identity.by_source = true;
    settings.identity.signed = false;
    settings.identity.by_address = false;
    settings.tokens = meta169_api::token::TokenSettings {
        mode,
        keys: std::sync::Arc::new(meta169_api::token::TokenKeys::parse(TOKEN_KEY).unwrap()),
    };
    let api = TestApi::start(settings, ServerLimits::default()).await;
    api.add(&example_instance()).await;
    api
}

impl TestApi {
    async fn put_token(
        &self,
        ttl: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (u16, String, Option<String>) {
        let mut request = self.http.put(format!("{}/latest/api/token", self.base));
        if let Some(ttl) = ttl {
            request = request.header("X-aws-ec2-metadata-token-ttl-seconds", ttl);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let r = request.send().await.unwrap();
        let ttl_back = r
            .headers()
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), r.text().await.unwrap(), ttl_back)
    }

    async fn get_with_token(&self, path: &str, token: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn tokens_are_issued_and_checked() {
    use meta169_api::token::{TokenKeys, TokenMode};
    let api = token_api(TokenMode::Optional).await;
    let (status, token, ttl) = api.put_token(Some("21600"), &[]).await;
    assert_eq!((status, ttl.as_deref()), (200, Some("21600")), "{token}");
    let path = "/latest/meta-data/instance-id";
    assert_eq!(
        api.get_with_token(path, &token).await,
        (200, "i-00000042".into())
    );
    assert_eq!(
        api.get_with_token("/openstack/latest/meta_data.json", &token)
            .await
            .0,
        200,
        "both trees"
    );
    // Optional: no token is fine; a bad one is not.
    assert_eq!(api.get(path).await.0, 200);
    let (status, why) = api.get_with_token(path, "v1.forged").await;
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("not valid"), "{why}");
    // A token issued to another instance does not open this one's data.
    let keys = TokenKeys::parse(TOKEN_KEY).unwrap();
    let other = keys.issue("another-instance", std::time::Duration::from_secs(60));
    assert_eq!(api.get_with_token(path, &other).await.0, 401);
    let expired = keys.issue(&example_instance().uuid, std::time::Duration::ZERO);
    let (status, why) = api.get_with_token(path, &expired).await;
    assert_eq!(status, 401);
    assert!(why.contains("expired"), "{why}");
    // The lifetime is required and bounded.
    for ttl in [None, Some("0"), Some("21601"), Some("-5"), Some("soon")] {
        let (status, why, _) = api.put_token(ttl, &[]).await;
        assert_eq!(status, 400, "{ttl:?}: {why}");
        assert!(why.contains("1 to 21600"), "{why}");
    }
    // A token request relayed by a proxy in the guest is refused, in any letter case.
    for name in ["X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR"] {
        let (status, why, _) = api.put_token(Some("60"), &[(name, "10.0.0.9")]).await;
        assert_eq!(status, 403, "{name}: {why}");
    }
    // Tokens are asked for with PUT.
    let (status, _) = api.get("/latest/api/token").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn tokens_can_be_required_per_site_or_per_instance() {
    use meta169_api::token::TokenMode;
    let path = "/latest/meta-data/instance-id";
    let site = token_api(TokenMode::Required).await;
    let (status, why) = site.get(path).await;
    assert_eq!(status, 401);
    assert!(why.contains("PUT /latest/api/token"), "{why}");
    let (_, token, _) = site.put_token(Some("60"), &[]).await;
    assert_eq!(site.get_with_token(path, &token).await.0, 200);

    // The record's setting wins over the site's, both ways.
    let relaxed = token_api(TokenMode::Required).await;
    let mut instance = example_instance();
    instance.metadata_tokens = Some(TokenMode::Optional);
    relaxed.add(&instance).await;
    assert_eq!(relaxed.get(path).await.0, 200);
    let strict = token_api(TokenMode::Optional).await;
    instance.metadata_tokens = Some(TokenMode::Required);
    strict.add(&instance).await;
    assert_eq!(strict.get(path).await.0, 401);
}

/// Send raw requests in one write (the last asking to close); every
/// answer, without its date.
fn raw_all(addr: &str, requests: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(requests).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quick_path_answers_as_hyper_does() {
    let api = TestApi::start(signed_settings(), ServerLimits::default()).await;
    let i = example_instance();
    api.add(&i).await;
    // The same service behind a listener where hyper reads every request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let by_hyper = listener.local_addr().unwrap().to_string();
    let hyper_only = ServerLimits {
        quick_path: false,
        ..ServerLimits::default()
    };
    tokio::spawn(meta169_api::server::serve_direct(
        listener,
        meta169_api::metadata_handler(api.service.clone()),
        hyper_only,
        std::future::pending(),
    ));
    let sig = sign_instance_id(SECRET, &i.uuid);
    let head = |path: &str, headers: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}\r\n")
    };
    let signed = |path: &str| {
        head(
            path,
            &format!(
                "X-Instance-ID: {}\r\nx-tenant-id: {}\r\nX-INSTANCE-ID-SIGNATURE: {sig}\r\nX-Forwarded-For: 6.6.6.6, 10.9.9.9\r\n",
                i.uuid, i.project_id
            ),
        )
    };
    let requests = [
        signed("/latest/meta-data/instance-id"),
        signed("/latest/meta-data/"),
        signed("/latest/meta-data/local-ipv4"),
        signed("/openstack/latest/network_data.json"),
        signed("/openstack/latest/user_data"),
        signed("/openstack/latest/password"),
        signed("/openstack"),
        signed("/"),
        signed("/2009-04-04/meta-data/hostname?x=1"),
        signed("/no/such/thing"),
        signed("/latest/meta-data/%2e%2e"),
        head("/latest/meta-data/instance-id", &format!("X-Instance-ID: {}\r\nX-Tenant-ID: {}\r\nX-Instance-ID-Signature: 00\r\n", i.uuid, i.project_id)),
        head("/latest/meta-data/instance-id", &format!("X-Instance-ID: {}\r\nX-Instance-ID-Signature: {sig}\r\n", i.uuid)),
        head("/latest/meta-data/instance-id", &format!("X-Instance-ID: {0}\r\nX-Instance-ID: {0}\r\nX-Tenant-ID: p\r\nX-Instance-ID-Signature: {sig}\r\n", i.uuid)),
        signed("/latest/meta-data/hostname").replace("Host:", "Connection: close\r\nHost:"),
    ]
    .concat();
    let by_quick = api.base.trim_start_matches("http://").to_string();
    let (quick, hyper) = tokio::task::spawn_blocking(move || {
        (
            raw_all(&by_quick, requests.as_bytes()),
            raw_all(&by_hyper, requests.as_bytes()),
        )
    })
    .await
    .unwrap();
    assert_eq!(quick.matches("HTTP/1.1 ").count(), 15, "{quick}");
    assert_eq!(quick, hyper);
    for status in [
        "200 OK",
        "404 Not Found",
        "400 Bad Request",
        "403 Forbidden",
    ] {
        assert!(quick.contains(status), "no {status}: {quick}");
    }
}

#[tokio::test]
async fn a_request_without_a_token_is_counted_once() {
    let api = TestApi::standalone().await;
    let counted = || api.service.metrics.tokenless.get();
    // A password read is tried from the caches first and answered by the
    // store; a cached path at once; both the quick way and hyper's.
    for path in [
        "/openstack/latest/password",
        "/latest/meta-data/instance-id",
    ] {
        let before = counted();
        api.ok(path).await;
        assert_eq!(counted(), before + 1, "{path}");
        let before = counted();
        let r = api
            .http
            .post(format!("{}{path}", api.base))
            .header("Content-Length", "0")
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{path}");
        assert_eq!(counted(), before + 1, "{path} by hyper");
    }
}
