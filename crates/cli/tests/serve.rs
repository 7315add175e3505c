//! The `meta169` binary end to end: the demo, the instance commands, a
//! crash after a password POST, and the signature scheme checked against
//! Python's own hmac.

mod common;

use common::{clients_dir, run_ok, start_serve};
use meta169_testkit::{free_port, python, temp_dir};
use serde_json::Value;

#[tokio::test]
async fn demo_serves_the_example_and_prints_how_to_try_it() {
    let dir = temp_dir();
    let (port, admin) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin_listen = format!("127.0.0.1:{admin}");
    let _server = start_serve(
        "demo",
        &[
            "--demo",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
        ],
        None,
        dir.path(),
    );
    let log = meta169_testkit::read_log(&dir.path().join("demo.log"));
    assert!(
        log.contains(&format!(
            "curl http://{listen}/openstack/latest/meta_data.json"
        )),
        "{log}"
    );
    let md: Value = reqwest::get(format!("http://{listen}/openstack/latest/meta_data.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["uuid"], meta169_tree::example_instance().uuid);
}

/// serve given one CPU runs on one thread: everything still works there,
/// the password POST (a blocking store write) included, and the thread
/// that write ran on goes soon after (a second thread makes every socket
/// call of the process dearer).
#[test]
fn serve_on_one_cpu_answers_everything_on_one_thread() {
    let dir = temp_dir();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut command = std::process::Command::new("taskset");
    command.args(["-c", "0", common::BIN]).args([
        "serve",
        "--demo",
        "--listen",
        &listen,
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--ops-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    let server = meta169_testkit::Process::start("one-cpu", command, dir.path());
    let log = dir.path().join("one-cpu.log");
    assert!(
        meta169_testkit::wait_until(std::time::Duration::from_secs(20), || {
            meta169_testkit::read_log(&log).contains("metadata API listening")
        }),
        "{}",
        meta169_testkit::read_log(&log)
    );
    assert!(
        meta169_testkit::read_log(&log).contains("serving on a single thread"),
        "{}",
        meta169_testkit::read_log(&log)
    );
    let url = |path: &str| format!("http://{listen}{path}");
    let (status, md) = common::http("GET", &url("/openstack/latest/meta_data.json"), &[], b"");
    assert_eq!(status, 200, "{md}");
    let md: Value = serde_json::from_str(&md).unwrap();
    assert_eq!(md["uuid"], meta169_tree::example_instance().uuid);
    let (status, _) = common::http(
        "POST",
        &url("/openstack/latest/password"),
        &[],
        b"on-one-cpu",
    );
    assert_eq!(status, 200);
    let (status, password) = common::http("GET", &url("/openstack/latest/password"), &[], b"");
    assert_eq!((status, password.as_str()), (200, "on-one-cpu"));
    let tasks = format!("/proc/{}/task", server.pid().expect("serve is running"));
    let threads = || std::fs::read_dir(&tasks).map_or(0, |d| d.count());
    // tokio's own keep-alive would keep the store's thread for 10 s.
    assert!(
        meta169_testkit::wait_until(std::time::Duration::from_secs(5), || threads() == 1),
        "serve still runs {} threads",
        threads()
    );
}

#[test]
fn instance_commands_round_trip_a_record() {
    let dir = temp_dir();
    let store = format!("sqlite://{}/store.db", dir.path().display());
    let example = run_ok(&["instance", "example"]);
    let file = dir.path().join("instance.json");
    std::fs::write(&file, &example).unwrap();
    let added = run_ok(&["instance", "--store", &store, "add", file.to_str().unwrap()]);
    assert!(added.contains("stored (revision 1)"), "{added}");
    let listed = run_ok(&["instance", "--store", &store, "list"]);
    assert!(
        listed.contains("6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02\tdemo"),
        "{listed}"
    );
    let shown: Value = serde_json::from_str(&run_ok(&[
        "instance",
        "--store",
        &store,
        "show",
        "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
    ]))
    .unwrap();
    let original: Value = serde_json::from_str(&example).unwrap();
    assert_eq!(shown, original, "show prints what add takes");
    run_ok(&[
        "instance",
        "--store",
        &store,
        "set-password",
        "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
        "pw",
    ]);
    run_ok(&[
        "instance",
        "--store",
        &store,
        "set-password",
        "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
        "--clear",
    ]);
    run_ok(&[
        "instance",
        "--store",
        &store,
        "rm",
        "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
    ]);
    let output = common::meta169(None)
        .args([
            "instance",
            "--store",
            &store,
            "show",
            "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no instance with uuid"));
    // A bad record is refused with the reason.
    let refused = |record: &str, extra: &[&str]| {
        std::fs::write(&file, record).unwrap();
        let output = common::meta169(None)
            .args(["instance", "--store", &store, "add", file.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{record} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(refused(r#"{"uuid": "x", "name": "x"}"#, &[]).contains("missing field `hostname`"));
    let long = "h".repeat(300);
    let err = refused(
        &format!(r#"{{"uuid": "x", "name": "x", "hostname": "{long}"}}"#),
        &[],
    );
    assert!(err.contains("hostname"), "{err}");
    let err = refused(
        r#"{"uuid": "x", "name": "x", "hostname": "x", "user_data": "eA==", "user_data_text": "x"}"#,
        &[],
    );
    assert!(err.contains("not both"), "{err}");

    // A record a person can write: no project (standalone), user data as
    // text or from a file, never base64 by hand.
    std::fs::write(
        &file,
        r##"{"uuid": "hand-written", "name": "web", "hostname": "web", "user_data_text": "#cloud-config\nruncmd: [true]\n"}"##,
    )
    .unwrap();
    run_ok(&["instance", "--store", &store, "add", file.to_str().unwrap()]);
    let shown: Value = serde_json::from_str(&run_ok(&[
        "instance",
        "--store",
        &store,
        "show",
        "hand-written",
    ]))
    .unwrap();
    assert_eq!(shown["project_id"], meta169_tree::DEFAULT_PROJECT_ID);
    assert_eq!(
        shown["user_data"],
        "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFt0cnVlXQo="
    );
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, "#!/bin/sh\necho hi\n").unwrap();
    run_ok(&[
        "instance",
        "--store",
        &store,
        "add",
        file.to_str().unwrap(),
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    let shown: Value = serde_json::from_str(&run_ok(&[
        "instance",
        "--store",
        &store,
        "show",
        "hand-written",
    ]))
    .unwrap();
    assert_eq!(shown["user_data"], "IyEvYmluL3NoCmVjaG8gaGkK");
    std::fs::write(&user_data, vec![b'x'; 70_000]).unwrap();
    let err = refused(
        r#"{"uuid": "hand-written", "name": "web", "hostname": "web"}"#,
        &["--user-data", user_data.to_str().unwrap()],
    );
    assert!(err.contains("the limit is 65536 bytes"), "{err}");

    // --demo never writes into a real store.
    let output = common::meta169(None)
        .args(["serve", "--demo", "--store", &store])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_password_acknowledged_with_200_survives_a_crash() {
    let dir = temp_dir();
    let (store, _) = common::example_store(dir.path());
    let config = dir.path().join("meta169.toml");
    std::fs::write(&config, "[serve.identity]\nby_source = true\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--store",
        &store,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ];
    let mut server = start_serve("first", &args, None, dir.path());
    let url = format!("http://{listen}/openstack/latest/password");
    let client = reqwest::Client::new();
    let r = client
        .post(&url)
        .body("c2VjcmV0LWJsb2I=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.kill_hard();
    let _server = start_serve("second", &args, None, dir.path());
    // A fresh client: the old one's pooled connection died with the server.
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        "c2VjcmV0LWJsb2I="
    );
    assert_eq!(
        client
            .post(&url)
            .body("again")
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
}

#[tokio::test]
async fn signatures_computed_by_python_hmac_are_accepted() {
    let dir = temp_dir();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "s3cret-shared\n").unwrap();
    let (store, _) = common::example_store(dir.path());
    let (_server, listen) = common::serve_on_loopback(
        "signed",
        dir.path(),
        &format!(
            "[serve.identity]\nsigned = true\nshared_secret_file = \"{}\"\n",
            secret_file.display()
        ),
        &store,
    );
    let instance = meta169_tree::example_instance();
    let signature = python(
        &clients_dir().join("sign.py"),
        &["s3cret-shared", &instance.uuid],
        None,
    );
    let signature = signature.trim();
    assert_eq!(signature.len(), 64);
    let ask = |sig: String| {
        let url = format!("http://{listen}/openstack/latest/meta_data.json");
        let (uuid, project) = (instance.uuid.clone(), instance.project_id.clone());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("X-Instance-ID", uuid)
                .header("X-Tenant-ID", project)
                .header("X-Instance-ID-Signature", sig)
                .send()
                .await
                .unwrap()
        }
    };
    let accepted = ask(signature.to_string()).await;
    assert_eq!(accepted.status(), 200);
    let md: Value = accepted.json().await.unwrap();
    assert_eq!(md["uuid"], instance.uuid);
    // A signature made with another secret is refused, and the log tells
    // the operator what to compare without printing the expected value.
    let wrong = python(
        &clients_dir().join("sign.py"),
        &["other-secret", &instance.uuid],
        None,
    );
    let refused = ask(wrong.trim().to_string()).await;
    assert_eq!(refused.status(), 403);
    let log = meta169_testkit::read_log(&dir.path().join("signed.log"));
    assert!(
        log.contains("compare metadata_proxy_shared_secret"),
        "{log}"
    );
    assert!(
        !log.contains(signature),
        "the expected signature must not be logged"
    );
}

#[test]
fn hostile_requests_leave_a_log_line() {
    use std::io::{Read, Write};
    let dir = temp_dir();
    let (store, _) = common::example_store(dir.path());
    let (_server, listen) = common::serve_on_loopback(
        "hostile",
        dir.path(),
        "[serve.identity]\nby_source = true\n",
        &store,
    );
    let send = |request: &[u8]| {
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let _ = s.write_all(request);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(send(big.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(
        send(b"GET /latest/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .starts_with("HTTP/1.1 400")
    );
    let log_file = dir.path().join("hostile.log");
    assert!(
        meta169_testkit::wait_until(std::time::Duration::from_secs(5), || {
            let log = meta169_testkit::read_log(&log_file);
            log.contains("request refused") && log.contains("not valid UTF-8")
        }),
        "{}",
        meta169_testkit::read_log(&log_file)
    );
}
