//! What an operator meets: logs without colour codes off a terminal, JSON
//! logs, one clear line for a user error, fail-fast on what cannot fix
//! itself, a clean stop on SIGTERM while still connecting, and no warnings
//! about what a command does not use.

mod common;

use common::{meta169, serve_on_loopback, BIN};
use meta169_testkit::{
    free_port, read_log, temp_dir, wait_until, OvsdbServer, Process, OVN_NB_SCHEMA,
};
use std::process::{Command, Output};
use std::time::Duration;

/// Run `meta169 <args>` to its end.
fn run(args: &[&str]) -> Output {
    meta169(None).args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failed command: exit status 1 and one `meta169: ...` message, no
/// panic or backtrace.
fn assert_user_error(output: &Output, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let message = text
        .find("meta169: ")
        .map(|at| &text[at..])
        .unwrap_or_else(|| panic!("no error message in:\n{text}"));
    assert!(message.contains(needle), "{message}");
    assert_eq!(text.matches("meta169: ").count(), 1, "{text}");
    for bad in ["panicked", "backtrace", "Stack backtrace", "Caused by:"] {
        assert!(!text.contains(bad), "{text}");
    }
}

#[test]
fn logs_off_a_terminal_are_plain_and_json_logs_parse() {
    let dir = temp_dir();
    let (store, _) = common::example_store(dir.path());
    let (mut text, _) = serve_on_loopback("text", dir.path(), "", &store);
    text.stop();
    let log = read_log(&dir.path().join("text.log"));
    assert!(log.contains("metadata API listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log:?}"
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut command = meta169(None);
    command.args([
        "--log-format",
        "json",
        "serve",
        "--store",
        &store,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ]);
    let mut json = Process::start("json", command, dir.path());
    let log_file = dir.path().join("json.log");
    assert!(wait_until(Duration::from_secs(20), || read_log(&log_file)
        .contains("listening")));
    json.stop();
    let log = read_log(&log_file);
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
}

#[test]
fn user_errors_are_one_clear_message() {
    let dir = temp_dir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[serve]\nlisen = \"0.0.0.0:8775\"\n").unwrap();
    let c = config.display().to_string();
    assert_user_error(&run(&["serve", "--config", &c]), "unknown field `lisen`");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let store = format!("sqlite://{}/s.db", dir.path().display());
    assert_user_error(
        &run(&[
            "serve",
            "--store",
            &store,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
        ]),
        &format!("cannot listen on {listen}"),
    );

    let record = dir.path().join("record.json");
    std::fs::write(&record, "{\"uuid\": 5}").unwrap();
    assert_user_error(
        &run(&[
            "instance",
            "--store",
            &store,
            "add",
            &record.display().to_string(),
        ]),
        "is not a valid instance record",
    );
}

#[test]
fn an_empty_admin_token_file_stops_serve_at_start() {
    let dir = temp_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "\n").unwrap();
    let config = dir.path().join("meta169.toml");
    std::fs::write(
        &config,
        format!("[serve.admin]\ntoken_file = \"{}\"\n", token.display()),
    )
    .unwrap();
    let store = format!("sqlite://{}/s.db", dir.path().display());
    let listen = format!("127.0.0.1:{}", free_port());
    let c = config.display().to_string();
    assert_user_error(
        &run(&[
            "serve", "--config", &c, "--store", &store, "--listen", &listen,
        ]),
        "is empty",
    );
    std::fs::remove_file(&token).unwrap();
    assert_user_error(
        &run(&[
            "serve", "--config", &c, "--store", &store, "--listen", &listen,
        ]),
        "cannot read the admin token",
    );
}

/// `meta169 agent` arguments for a chassis on a Linux bridge, without OVS.
fn agent_args(sb: &str, dir: &std::path::Path) -> Vec<String> {
    [
        "agent",
        "--ovn-sb",
        sb,
        "--chassis",
        "ops-chassis",
        "--bridge",
        "linux:m169ops",
        "--ovs-db",
        "unix:/nonexistent",
        "--ops-listen",
        "",
        "--status-socket",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([dir.join("agent.sock").display().to_string()])
    .collect()
}

#[test]
fn the_agent_gives_up_on_a_database_that_is_not_the_southbound() {
    let dir = temp_dir();
    let nb = OvsdbServer::start("nb", OVN_NB_SCHEMA, dir.path());
    let args = agent_args(&nb.remote(), dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_user_error(
        &run(&args),
        "has no OVN_Southbound database (it has: OVN_Northbound",
    );
    let trace = run(&[
        "trace",
        "--network",
        "n1",
        "--ip",
        "10.0.0.5",
        "--ovn-sb",
        &nb.remote(),
        "--chassis",
        "c",
        "--bridge",
        "linux:m169ops",
        "--ovs-db",
        "unix:/nonexistent",
    ]);
    let out = String::from_utf8_lossy(&trace.stdout);
    assert!(
        out.contains("is not OVN_Southbound (it has: OVN_Northbound"),
        "{out}"
    );
}

#[test]
fn an_ssl_remote_without_its_ca_file_stops_the_agent() {
    let dir = temp_dir();
    let config = dir.path().join("meta169.toml");
    std::fs::write(
        &config,
        "[agent]\novn_sb_ca_cert = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let mut args = agent_args("ssl:127.0.0.1:6642", dir.path());
    args.extend(["--config".to_string(), config.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_user_error(&run(&args), "cannot read /nonexistent/ca.pem");
}

#[test]
fn sigterm_while_connecting_ends_cleanly() {
    let dir = temp_dir();
    let sb = format!("unix:{}/no-such.sock", dir.path().display());
    let mut command = Command::new(BIN);
    command
        .args(agent_args(&sb, dir.path()))
        .env("RUST_LOG", "info");
    let mut agent = Process::start("agent", command, dir.path());
    let log_file = dir.path().join("agent.log");
    assert!(wait_until(Duration::from_secs(10), || read_log(&log_file)
        .contains("starting agent")));
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.signal(libc::SIGTERM));
    assert!(
        wait_until(Duration::from_secs(5), || agent.exited().is_some()),
        "{}",
        read_log(&log_file)
    );
    let status = agent.exited().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        read_log(&log_file).contains("stopped while connecting"),
        "{}",
        read_log(&log_file)
    );
}

#[test]
fn commands_do_not_warn_about_what_they_do_not_use() {
    let dir = temp_dir();
    let record = dir.path().join("instance.json");
    std::fs::write(&record, common::run_ok(&["instance", "example"])).unwrap();
    let image = dir.path().join("drive.iso");
    let out = run(&[
        "configdrive",
        "--from-json",
        &record.display().to_string(),
        "-o",
        &image.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("secret"), "{}", stderr(&out));
}

#[test]
fn neutron_ini_keys_meta169_does_not_use_are_named() {
    let dir = temp_dir();
    let ini = dir.path().join("neutron_ovn_metadata_agent.ini");
    std::fs::write(
        &ini,
        "[DEFAULT]\ndebug = True\nlog_dir = /var/log/neutron\nmetadata_workers = 4\nnova_metadata_host = 127.0.0.1\n\n[ovn]\novn_sb_connection = unix:/nonexistent\novsdb_probe_interval = 60000\n",
    )
    .unwrap();
    let out = run(&[
        "trace",
        "--network",
        "n1",
        "--ip",
        "10.0.0.5",
        "--neutron-config",
        &ini.display().to_string(),
        "--chassis",
        "c",
        "--bridge",
        "linux:m169ops",
        "--ovs-db",
        "unix:/nonexistent",
    ]);
    let text = stderr(&out);
    assert!(
        text.contains("[DEFAULT] metadata_workers, [ovn] ovsdb_probe_interval"),
        "{text}"
    );
    assert!(
        !text.contains("log_dir") && !text.contains("debug"),
        "{text}"
    );
}
