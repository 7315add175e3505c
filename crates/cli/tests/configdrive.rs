//! `meta169 configdrive` against `meta169 serve` on the same store: every
//! file on the drive equals what the API serves for that path.

mod common;

use common::run_ok;
use meta169_testkit::{blkid, extract_iso, extract_vfat, read_tree, temp_dir};
use serde_json::Value;

async fn api_get(base: &str, path: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(format!("{base}/{path}")).await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn the_drive_holds_what_the_api_serves() {
    let dir = temp_dir();
    let (store, record) = common::example_store(dir.path());
    let config_text = "[serve.identity]\nby_source = true\n";
    let (_server, listen) = common::serve_on_loopback("serve", dir.path(), config_text, &store);
    let config = dir.path().join("serve.toml");
    let base = format!("http://{listen}");
    let uuid = meta169_tree::example_instance().uuid;

    let iso = dir.path().join("config.iso");
    run_ok(&[
        "configdrive",
        "--config",
        config.to_str().unwrap(),
        "--store",
        &store,
        "--instance",
        &uuid,
        "-o",
        iso.to_str().unwrap(),
    ]);
    let vfat = dir.path().join("config.img");
    run_ok(&[
        "configdrive",
        "--from-json",
        record.to_str().unwrap(),
        "--format",
        "vfat",
        "-o",
        vfat.to_str().unwrap(),
    ]);
    assert_eq!(blkid(&iso)["LABEL"], "config-2");
    assert_eq!(blkid(&vfat)["LABEL"], "config-2");

    let (iso_dir, vfat_dir) = (dir.path().join("iso"), dir.path().join("vfat"));
    extract_iso(&iso, &iso_dir);
    extract_vfat(&vfat, &vfat_dir);
    let iso_files = read_tree(&iso_dir);
    assert_eq!(
        iso_files,
        read_tree(&vfat_dir),
        "both formats carry the same files"
    );

    let mut compared = 0;
    for (path, bytes) in &iso_files {
        if let Some(rest) = path.strip_prefix("openstack/") {
            let (status, served) = api_get(&base, &format!("openstack/{rest}")).await;
            assert_eq!(status, 200, "{path}");
            if path.ends_with("meta_data.json") {
                let mut ours: Value = serde_json::from_slice(bytes).unwrap();
                let mut theirs: Value = serde_json::from_slice(&served).unwrap();
                // The seed is fresh per request on the API; everything else is equal.
                assert!(
                    ours.as_object_mut()
                        .unwrap()
                        .remove("random_seed")
                        .is_some()
                        == theirs
                            .as_object_mut()
                            .unwrap()
                            .remove("random_seed")
                            .is_some()
                );
                assert_eq!(ours, theirs, "{path}");
            } else {
                assert_eq!(bytes, &served, "{path}");
            }
            compared += 1;
        } else if let Some(version) = path
            .strip_prefix("ec2/")
            .and_then(|p| p.strip_suffix("/meta-data.json"))
        {
            let doc: Value = serde_json::from_slice(bytes).unwrap();
            for (key, value) in doc.as_object().unwrap() {
                let leaf = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Value::Object(_) => continue,
                    other => panic!("{key}: {other}"),
                };
                let (status, served) = api_get(&base, &format!("{version}/meta-data/{key}")).await;
                assert_eq!(status, 200, "{version}/{key}");
                assert_eq!(String::from_utf8(served).unwrap(), leaf, "{version}/{key}");
                compared += 1;
            }
            assert_eq!(
                doc["public-keys"]["0"]["openssh-key"]
                    .as_str()
                    .unwrap()
                    .as_bytes(),
                api_get(
                    &base,
                    &format!("{version}/meta-data/public-keys/0/openssh-key")
                )
                .await
                .1
            );
        } else if let Some(version) = path
            .strip_prefix("ec2/")
            .and_then(|p| p.strip_suffix("/user-data"))
        {
            assert_eq!(
                bytes,
                &api_get(&base, &format!("{version}/user-data")).await.1
            );
        }
    }
    assert!(compared >= 60, "only {compared} files compared");
}

#[test]
fn bad_requests_fail_clearly_and_write_nothing() {
    let dir = temp_dir();
    let store = format!("sqlite://{}/store.db", dir.path().display());
    let out = dir.path().join("config.iso");
    let output = common::meta169(None)
        .args([
            "configdrive",
            "--store",
            &store,
            "--instance",
            "missing",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no instance with uuid missing"));
    assert!(!out.exists());
    let record = dir.path().join("instance.json");
    std::fs::write(&record, run_ok(&["instance", "example"])).unwrap();
    let output = common::meta169(None)
        .args([
            "configdrive",
            "--from-json",
            record.to_str().unwrap(),
            "-o",
            "/nonexistent-dir/config.iso",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("cannot write /nonexistent-dir/config.iso"));
    let output = common::meta169(None)
        .args([
            "configdrive",
            "--from-json",
            record.to_str().unwrap(),
            "--format",
            "udf",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("use iso9660, vfat, nocloud or nocloud-vfat"));
}

#[tokio::test]
async fn injected_files_come_from_the_record_on_drive_and_api() {
    let dir = temp_dir();
    let mut instance = meta169_tree::example_instance();
    instance.files = vec![meta169_tree::model::InjectedFile {
        path: "/etc/motd".into(),
        content: "from the record\n".into(),
    }];
    let record = dir.path().join("instance.json");
    std::fs::write(&record, serde_json::to_string(&instance).unwrap()).unwrap();
    let store = format!("sqlite://{}/store.db", dir.path().display());
    run_ok(&[
        "instance",
        "--store",
        &store,
        "add",
        record.to_str().unwrap(),
    ]);
    let (_server, listen) = common::serve_on_loopback(
        "serve",
        dir.path(),
        "[serve.identity]\nby_source = true\n",
        &store,
    );
    let base = format!("http://{listen}");
    let (status, md) = api_get(&base, "openstack/latest/meta_data.json").await;
    assert_eq!(status, 200);
    let md: Value = serde_json::from_slice(&md).unwrap();
    assert_eq!(
        md["files"],
        serde_json::json!([{"path": "/etc/motd", "content_path": "/content/0000"}])
    );
    assert_eq!(
        api_get(&base, "openstack/content/0000").await,
        (200, b"from the record\n".to_vec())
    );
    assert_eq!(api_get(&base, "openstack/content/0001").await.0, 404);
    assert_eq!(api_get(&base, "openstack/content/00000").await.0, 404);

    // The drive holds the record's file first, then --file additions.
    let extra = dir.path().join("extra");
    std::fs::write(&extra, "added at build time\n").unwrap();
    let iso = dir.path().join("config.iso");
    run_ok(&[
        "configdrive",
        "--from-json",
        record.to_str().unwrap(),
        "--file",
        &format!("/etc/extra={}", extra.display()),
        "-o",
        iso.to_str().unwrap(),
    ]);
    let files = dir.path().join("drive");
    extract_iso(&iso, &files);
    let out = meta169_testkit::python(
        &common::clients_dir().join("configdrive_read.py"),
        &[files.to_str().unwrap()],
        None,
    );
    let read: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(read["files"]["/etc/motd"], "from the record\n", "{read}");
    assert_eq!(
        read["files"]["/etc/extra"], "added at build time\n",
        "{read}"
    );
    assert_eq!(
        read_tree(&files)["openstack/content/0000"],
        b"from the record\n".to_vec()
    );

    // Hostile files are refused with the reason.
    for (files, why) in [
        (
            serde_json::json!([{"path": "/etc/../root/.ssh/authorized_keys", "content": "eA=="}]),
            "'..' segments",
        ),
        (
            serde_json::json!(vec![
                serde_json::json!({"path": "/f", "content": "eA=="});
                10_000
            ]),
            "`files` may have at most 5 entries",
        ),
        (
            serde_json::json!([{"path": "/big", "content": base64_of(&[0u8; 20_000])}]),
            "the limit is 10240",
        ),
    ] {
        let mut hostile = serde_json::to_value(&instance).unwrap();
        hostile["files"] = files;
        std::fs::write(&record, hostile.to_string()).unwrap();
        let output = common::meta169(None)
            .args([
                "instance",
                "--store",
                &store,
                "add",
                record.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{stderr}");
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
