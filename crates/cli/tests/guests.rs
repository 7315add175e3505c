//! Real guests, as a homelab user boots them: a Debian image built from
//! Debian's packages (cloud-init, the kernel, OpenSSH), booted under QEMU
//! on a bridge in a namespace with DHCP from dnsmasq, its address unknown
//! in advance, and `meta169 serve` on the host side identifying it by MAC.
//! Three boots, in parallel: (1) NoCloud over HTTP with the seed URL in the
//! SMBIOS serial, (2) a `cidata` NoCloud drive and no metadata server,
//! (3) the OpenStack datasource over HTTP. Each: cloud-init finished with
//! no errors, the host name from the record, the SSH key installed (the
//! test logs in with it), the user data's `runcmd` ran, and the record's
//! injected file was written. About two minutes a boot under TCG; the
//! image is built once per machine (`scripts/guest-image`).

mod common;

use common::{run_ok, serve_in_namespace};
use meta169_testkit::guest::{self, Boot, Guest, Lan};
use meta169_testkit::{is_root, temp_dir, Process};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Longest a boot may take to finish cloud-init (TCG on a loaded 2-core
/// machine; about two minutes when alone).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const USER_DATA: &str =
    "#cloud-config\nruncmd:\n  - [sh, -c, 'echo user-data ran > /root/runcmd-ran']\n";
const INJECTED_PATH: &str = "/etc/meta169-injected";
const INJECTED: &str = "written from the record's files\n";

/// The record of a guest with only its MAC: DHCP decides its address.
fn record(dir: &Path, name: &str, mac: &str, public_key: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let record = json!({
        "uuid": format!("{name}-0000-4000-8000-000000000001"),
        "name": name,
        "hostname": name,
        "public_keys": {"test": public_key},
        "ports": [{"network_id": "lan", "mac": mac}],
        "user_data_text": USER_DATA,
        "files": [{"path": INJECTED_PATH,
                   "content": base64::engine::general_purpose::STANDARD.encode(INJECTED)}],
    });
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, record.to_string()).unwrap();
    file
}

/// `meta169 serve` on 169.254.169.254:80 in the lan's namespace, identity
/// by MAC, the record in its store.
fn serve(lan: &Lan, dir: &Path, record: &Path) -> Process {
    serve_in_namespace(
        &lan.ns,
        dir,
        "[serve]\naccess_log = \"all\"\ndhcp_domain = \"\"\n\
         [serve.identity]\nsigned = false\nby_address = false\nby_source = true\nby_mac = true\n",
        record,
    )
}

/// Boot, wait for cloud-init, log in with the key and check what the
/// record asked for; `datasource` is what cloud-init must have used.
fn boot_and_check(
    lan: &Lan,
    dir: &Path,
    key: &Path,
    boot: &Boot<'_>,
    datasource: &str,
    injected: bool,
) {
    let mut guest = Guest::boot(lan, boot, dir);
    let started = std::time::Instant::now();
    let finished = guest.wait_cloud_init(BOOT_TIMEOUT);
    let console = guest.console_text();
    assert!(
        finished,
        "{}: cloud-init did not finish within {BOOT_TIMEOUT:?}; console:\n{console}",
        boot.name
    );
    println!(
        "{}: cloud-init finished {:.0} s after QEMU started",
        boot.name,
        started.elapsed().as_secs_f64()
    );
    let (ok, out) = guest.ssh(
        lan,
        key,
        &format!(
            "hostname; cat /root/runcmd-ran; cat {INJECTED_PATH} 2>/dev/null; echo; cat /run/cloud-init/result.json"
        ),
    );
    guest.stop();
    let serve_log = meta169_testkit::read_log(&dir.join("serve.log"));
    if !ok {
        // What cloud-init said of itself, from the stopped guest's disk.
        let log = guest.read_file("/var/log/cloud-init.log");
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("WARNING")
                    || l.contains("ERROR")
                    || l.contains("NoCloud")
                    || l.contains("OpenStack")
            })
            .collect();
        panic!(
            "{}: SSH with the record's key failed: {out}\nconsole:\n{console}\nserve's log:\n{serve_log}\ncloud-init.log, notable lines:\n{}",
            boot.name,
            notable.join("\n")
        );
    }
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(boot.name),
        "host name from the record: {out}"
    );
    assert_eq!(lines.next(), Some("user-data ran"), "runcmd: {out}");
    if injected {
        assert!(out.contains(INJECTED.trim_end()), "injected file: {out}");
    }
    let result: Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
        .unwrap_or_else(|e| panic!("{}: result.json: {e}: {out}", boot.name));
    assert_eq!(
        result["v1"]["errors"],
        json!([]),
        "{}: cloud-init errors: {result}",
        boot.name
    );
    assert!(
        result["v1"]["datasource"]
            .as_str()
            .unwrap_or_default()
            .starts_with(datasource),
        "{}: datasource {result}",
        boot.name
    );
    assert!(
        !console.contains("Traceback"),
        "{}: a Python traceback on the console:\n{console}",
        boot.name
    );
}

fn setup(tag: &str) -> (tempfile::TempDir, Lan, std::path::PathBuf, String) {
    assert!(
        is_root(),
        "real-guest tests run as root (scripts/test does)"
    );
    // Built once per machine, before any guest boots.
    guest::image();
    let dir = temp_dir();
    let lan = Lan::new(tag, dir.path());
    let (key, public) = guest::ssh_key(dir.path());
    (dir, lan, key, public)
}

#[test]
fn nocloud_over_http_from_the_smbios_serial() {
    let (dir, lan, key, public) = setup("nocloud");
    let mac = "52:54:00:10:00:01";
    let record = record(dir.path(), "guest-nocloud", mac, &public);
    let _serve = serve(&lan, dir.path(), &record);
    boot_and_check(
        &lan,
        dir.path(),
        &key,
        &Boot {
            name: "guest-nocloud",
            mac,
            smbios: Some("serial=ds=nocloud-net;s=http://169.254.169.254/nocloud/".into()),
            seed: None,
        },
        "DataSourceNoCloudNet",
        true,
    );
    let log = meta169_testkit::read_log(&dir.path().join("serve.log"));
    assert!(
        log.contains("path=/nocloud/meta-data") && log.contains("guest=guest-nocloud"),
        "serve's access log:\n{log}"
    );
}

#[test]
fn nocloud_drive_without_a_metadata_server() {
    let (dir, lan, key, public) = setup("cidata");
    let mac = "52:54:00:10:00:02";
    let record = record(dir.path(), "guest-drive", mac, &public);
    let seed = dir.path().join("seed.iso");
    run_ok(&[
        "configdrive",
        "--from-json",
        record.to_str().unwrap(),
        "--format",
        "nocloud",
        "-o",
        seed.to_str().unwrap(),
    ]);
    boot_and_check(
        &lan,
        dir.path(),
        &key,
        &Boot {
            name: "guest-drive",
            mac,
            smbios: None,
            seed: Some(&seed),
        },
        "DataSourceNoCloud",
        true,
    );
}

#[test]
fn openstack_datasource_over_http_by_mac() {
    let (dir, lan, key, public) = setup("openstack");
    let mac = "52:54:00:10:00:03";
    let record = record(dir.path(), "guest-openstack", mac, &public);
    let _serve = serve(&lan, dir.path(), &record);
    boot_and_check(
        &lan,
        dir.path(),
        &key,
        &Boot {
            name: "guest-openstack",
            mac,
            smbios: Some("product=OpenStack Nova".into()),
            seed: None,
        },
        "DataSourceOpenStack",
        true,
    );
}
