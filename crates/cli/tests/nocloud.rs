//! NoCloud both ways, read with cloud-init's own NoCloud functions: a
//! `cidata` volume from `meta169 configdrive --format nocloud` (ISO 9660
//! and VFAT, network config version 1 and 2), and `meta169 serve`'s HTTP
//! seed at `/nocloud/`; both hold the same files.

mod common;

use common::{clients_dir, run_ok};
use meta169_testkit::{blkid, extract_iso, extract_vfat, python, read_tree, temp_dir};
use serde_json::Value;

fn nocloud_read(seed: &str) -> Value {
    let out = python(&clients_dir().join("nocloud_read.py"), &[seed], None);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// What cloud-init must find for the example record, in either version.
fn check_example(read: &Value) {
    let example = meta169_tree::example_instance();
    assert_eq!(
        read["meta_data"]["instance-id"],
        example.uuid.as_str(),
        "{read}"
    );
    assert_eq!(
        read["meta_data"]["local-hostname"], "demo.novalocal",
        "{read}"
    );
    assert!(
        read["meta_data"]["public-keys"][0]
            .as_str()
            .unwrap_or_default()
            .ends_with("demo@meta169"),
        "{read}"
    );
    assert_eq!(
        read["user_data"], "#cloud-config\nhostname: demo\npackages: [htop]\n",
        "{read}"
    );
    let eth0 = &read["interfaces"]["eth0"];
    assert_eq!(eth0["mac"], "fa:16:3e:12:34:56", "{read}");
    assert_eq!(eth0["subnets"][0]["type"], "dhcp4", "{read}");
    assert_eq!(read["nameservers"][0], "10.0.0.53", "{read}");
}

#[test]
fn cidata_volumes_are_read_by_cloud_inits_nocloud() {
    assert!(
        meta169_testkit::cloud_init_installed(),
        "cloud-init is not installed: run scripts/test as root, which installs it"
    );
    let dir = temp_dir();
    let record = dir.path().join("instance.json");
    std::fs::write(&record, run_ok(&["instance", "example"])).unwrap();
    let mut trees = Vec::new();
    for (format, version, extract) in [
        (
            "nocloud",
            "1",
            extract_iso as fn(&std::path::Path, &std::path::Path),
        ),
        ("nocloud-vfat", "2", extract_vfat),
    ] {
        let image = dir.path().join(format!("{format}.img"));
        run_ok(&[
            "configdrive",
            "--from-json",
            record.to_str().unwrap(),
            "--format",
            format,
            "--network-config-version",
            version,
            "-o",
            image.to_str().unwrap(),
        ]);
        assert_eq!(blkid(&image)["LABEL"], "cidata", "{format}");
        let files = dir.path().join(format);
        extract(&image, &files);
        let read = nocloud_read(files.to_str().unwrap());
        check_example(&read);
        assert_eq!(
            read["network_config"]["version"],
            version.parse::<u64>().unwrap()
        );
        trees.push(read_tree(&files));
    }
    let names: Vec<&String> = trees[0].keys().collect();
    assert_eq!(
        names,
        ["meta-data", "network-config", "user-data", "vendor-data"],
        "the four files at the root"
    );
    assert_eq!(trees[0]["meta-data"], trees[1]["meta-data"]);

    // Config-drive features NoCloud lacks are refused, not dropped.
    let output = common::meta169(None)
        .args([
            "configdrive",
            "--from-json",
            record.to_str().unwrap(),
            "--format",
            "nocloud",
            "--file",
            "/etc/motd=/etc/hostname",
            "-o",
            dir.path().join("x.img").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NoCloud has neither"));
}

#[test]
fn the_http_seed_is_read_by_cloud_inits_nocloud() {
    assert!(
        meta169_testkit::cloud_init_installed(),
        "cloud-init is not installed: run scripts/test as root, which installs it"
    );
    let dir = temp_dir();
    let (store, record) = common::example_store(dir.path());
    let (_server, listen) = common::serve_on_loopback(
        "serve",
        dir.path(),
        "[serve]\nnocloud_network_config = 2\n[serve.identity]\nby_source = true\n",
        &store,
    );
    let read = nocloud_read(&format!("http://{listen}/nocloud/"));
    check_example(&read);
    assert_eq!(read["network_config"]["version"], 2, "{read}");

    // The seed's files are the drive's.
    let image = dir.path().join("seed.iso");
    run_ok(&[
        "configdrive",
        "--from-json",
        record.to_str().unwrap(),
        "--format",
        "nocloud",
        "--network-config-version",
        "2",
        "-o",
        image.to_str().unwrap(),
    ]);
    let files = dir.path().join("seed");
    extract_iso(&image, &files);
    for (name, bytes) in read_tree(&files) {
        let (status, body) = common::get(&format!("http://{listen}/nocloud/{name}"));
        assert_eq!(status, 200, "{name}");
        assert_eq!(body.as_bytes(), &bytes[..], "{name}");
    }
    assert_eq!(
        common::get(&format!("http://{listen}/nocloud/")).1,
        "meta-data\nuser-data\nvendor-data\nnetwork-config"
    );
    assert_eq!(
        common::get(&format!("http://{listen}/nocloud/other")).0,
        404
    );
}
