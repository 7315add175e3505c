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
