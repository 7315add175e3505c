//! Starting the `meta169` binary for a test, through the shared testkit.
#![allow(dead_code)]

pub mod node;

use meta169_testkit::{wait_until, Netns, Process};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_meta169");

pub fn clients_dir() -> PathBuf {
    meta169_testkit::clients_dir()
}

/// A `meta169` command, optionally inside a namespace.
pub fn meta169(netns: Option<&Netns>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = ns.command(BIN);
            c.env("RUST_LOG", "info");
            c
        }
        None => {
            let mut c = Command::new(BIN);
            c.env("RUST_LOG", "info");
            c
        }
    }
}

/// Run `meta169 <args>` to completion; return stdout, panic with stderr on failure.
pub fn run_ok(args: &[&str]) -> String {
    let output = meta169(None).args(args).output().expect("run meta169");
    assert!(
        output.status.success(),
        "meta169 {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Start `meta169 serve <args>`; wait for its "listening" log line.
pub fn start_serve(name: &str, args: &[&str], netns: Option<&Netns>, dir: &Path) -> Process {
    let mut command = meta169(netns);
    command.arg("serve").args(args);
    // Tests run side by side: each serve gets an operations port of its own.
    if !args.contains(&"--ops-listen") {
        command.args([
            "--ops-listen",
            &format!("127.0.0.1:{}", meta169_testkit::free_port()),
        ]);
    }
    let mut process = Process::start(name, command, dir);
    let log = dir.join(format!("{name}.log"));
    let up = wait_until(Duration::from_secs(20), || {
        process.exited().is_none()
            && meta169_testkit::read_log(&log).contains("metadata API listening")
    });
    assert!(
        up,
        "meta169 serve did not start:\n{}",
        meta169_testkit::read_log(&log)
    );
    process
}

/// A store file in `dir` holding the example record; returns the store URL
/// and the record file.
pub fn example_store(dir: &Path) -> (String, PathBuf) {
    let record = dir.join("instance.json");
    std::fs::write(&record, run_ok(&["instance", "example"])).expect("write record");
    (store_holding(dir, &record), record)
}

/// A store file in `dir` holding the record in file `record` (added with
/// `meta169 instance add`); returns the store URL.
pub fn store_holding(dir: &Path, record: &Path) -> String {
    let store = format!("sqlite://{}/store.db", dir.display());
    run_ok(&[
        "instance",
        "--store",
        &store,
        "add",
        &record.to_string_lossy(),
    ]);
    store
}

/// `meta169 serve` on 169.254.169.254:80 inside `netns`, as on a host
/// bridge, with `config` (TOML text) and a store in `dir` holding the
/// record in file `record`.
pub fn serve_in_namespace(netns: &Netns, dir: &Path, config: &str, record: &Path) -> Process {
    let store = store_holding(dir, record);
    let config_file = dir.join("meta169.toml");
    std::fs::write(&config_file, config).expect("write config");
    start_serve(
        "serve",
        &[
            "--config",
            &config_file.to_string_lossy(),
            "--store",
            &store,
            "--listen",
            "169.254.169.254:80",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        Some(netns),
        dir,
    )
}

/// `meta169 serve` on loopback ports with `config` (TOML text) and `store`;
/// returns the process and the API's address.
pub fn serve_on_loopback(name: &str, dir: &Path, config: &str, store: &str) -> (Process, String) {
    let config_file = dir.join(format!("{name}.toml"));
    std::fs::write(&config_file, config).expect("write config");
    let listen = format!("127.0.0.1:{}", meta169_testkit::free_port());
    let admin = format!("127.0.0.1:{}", meta169_testkit::free_port());
    let args = [
        "--config",
        &config_file.to_string_lossy(),
        "--store",
        store,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ];
    (start_serve(name, &args, None, dir), listen)
}

/// One HTTP/1.1 request over a fresh connection: (status, body); status 0
/// when nothing answers.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else {
        return (0, "refused".into());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `GET url`: (status, body).
pub fn get(url: &str) -> (u16, String) {
    http("GET", url, &[], b"")
}
