//! Config-drive images read back by independent, well-known readers:
//! xorriso, isoinfo and pycdlib for ISO 9660; mtools and fsck.fat for VFAT;
//! blkid for the label; cloud-init's ConfigDrive reader for the content.

use bytes::Bytes;
use meta169_configdrive::{
    drive_files, write_image, ConfigDriveError, DriveInput, Format, InjectedFile, RandomSeed,
};
use meta169_testkit::{blkid, extract_iso, extract_vfat, python, read_tree, run_tool, temp_dir};
use meta169_tree::{example_instance, Instance, RenderOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn clients() -> PathBuf {
    meta169_testkit::clients_dir()
}

fn input<'a>(instance: &'a Instance, render: &'static RenderOptions) -> DriveInput<'a> {
    DriveInput {
        instance,
        render,
        vendor_data2: None,
        files: vec![
            InjectedFile {
                guest_path: "/etc/motd".into(),
                data: Bytes::from_static(b"welcome\n"),
            },
            InjectedFile {
                guest_path: "/root/Some Long File Name.conf".into(),
                data: Bytes::from(vec![7u8; 5000]),
            },
        ],
        admin_pass: Some("adm1n".into()),
        random_seed: RandomSeed::Derived,
    }
}

fn render() -> &'static RenderOptions {
    Box::leak(Box::new(RenderOptions::default()))
}

fn expected(files: &[(String, Bytes)]) -> BTreeMap<String, Vec<u8>> {
    files.iter().map(|(p, b)| (p.clone(), b.to_vec())).collect()
}

fn check_cloud_init_reads(dir: &Path, instance: &Instance) {
    let out = python(
        &clients().join("configdrive_read.py"),
        &[&dir.to_string_lossy()],
        None,
    );
    let read: Value = serde_json::from_str(&out).unwrap();
    let md = &read["metadata"];
    assert_eq!(md["uuid"], instance.uuid);
    assert_eq!(md["hostname"], "demo.novalocal");
    assert_eq!(md["admin_pass"], "adm1n");
    assert_eq!(
        read["userdata"].as_str().unwrap().as_bytes(),
        instance.user_data.as_deref().unwrap()
    );
    assert_eq!(read["networkdata"], instance.network_data.clone().unwrap());
    assert_eq!(read["files"]["/etc/motd"], "welcome\n");
    assert_eq!(read["ec2-metadata"]["instance-id"], "i-00000042");
    assert_eq!(
        read["ec2-metadata"]["public-keys"]["0"]["openssh-key"],
        instance.public_keys["demo-key"]
    );
    assert_eq!(read["ec2-metadata"]["ami-launch-index"], 0);
}

#[test]
fn iso9660_reads_back_with_xorriso_isoinfo_pycdlib_and_cloud_init() {
    let dir = temp_dir();
    let instance = example_instance();
    let files = drive_files(&input(&instance, render())).unwrap();
    let image = dir.path().join("config.iso");
    write_image(&files, Format::Iso9660, &image).unwrap();

    let ids = blkid(&image);
    assert_eq!(
        ids.get("TYPE").map(String::as_str),
        Some("iso9660"),
        "{ids:?}"
    );
    assert_eq!(
        ids.get("LABEL").map(String::as_str),
        Some("config-2"),
        "{ids:?}"
    );

    let extracted = dir.path().join("x");
    extract_iso(&image, &extracted);
    assert_eq!(
        read_tree(&extracted),
        expected(&files),
        "xorriso (Rock Ridge) reads every file back"
    );

    // isoinfo: Joliet and Rock Ridge listings, and one file's bytes.
    let joliet = run_tool("isoinfo", &["-i", &image.to_string_lossy(), "-J", "-f"]);
    assert!(
        joliet
            .lines()
            .any(|l| l == "/openstack/2018-08-27/meta_data.json"),
        "{joliet}"
    );
    let rock = run_tool("isoinfo", &["-i", &image.to_string_lossy(), "-R", "-f"]);
    assert!(
        rock.lines().any(|l| l == "/ec2/latest/meta-data.json"),
        "{rock}"
    );
    let user_data = run_tool(
        "isoinfo",
        &[
            "-i",
            &image.to_string_lossy(),
            "-J",
            "-x",
            "/openstack/latest/user_data",
        ],
    );
    assert_eq!(user_data.as_bytes(), instance.user_data.as_deref().unwrap());

    // pycdlib, through both name spaces.
    let read: Value = serde_json::from_str(&python(
        &clients().join("pycdlib_read.py"),
        &[&image.to_string_lossy()],
        None,
    ))
    .unwrap();
    assert_eq!(read["volume_id"], "config-2");
    for (path, bytes) in &files {
        let sum = hex(&Sha256::digest(bytes));
        assert_eq!(read["rr"][path], sum, "pycdlib rr {path}");
        assert_eq!(read["joliet"][path], sum, "pycdlib joliet {path}");
    }
    check_cloud_init_reads(&extracted, &instance);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vfat_reads_back_with_mtools_fsck_and_cloud_init() {
    let dir = temp_dir();
    let instance = example_instance();
    let files = drive_files(&input(&instance, render())).unwrap();
    let image = dir.path().join("config.img");
    write_image(&files, Format::Vfat, &image).unwrap();

    let ids = blkid(&image);
    assert_eq!(ids.get("TYPE").map(String::as_str), Some("vfat"), "{ids:?}");
    assert_eq!(
        ids.get("LABEL").map(String::as_str),
        Some("config-2"),
        "{ids:?}"
    );
    run_tool("fsck.fat", &["-n", &image.to_string_lossy()]);
    let listing = run_tool(
        "mdir",
        &["-i", &image.to_string_lossy(), "::/openstack/latest"],
    );
    assert!(listing.contains("meta_data.json"), "{listing}");

    let extracted = dir.path().join("x");
    extract_vfat(&image, &extracted);
    assert_eq!(
        read_tree(&extracted),
        expected(&files),
        "mcopy reads every file back"
    );
    check_cloud_init_reads(&extracted, &instance);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let dir = temp_dir();
    let instance = example_instance();
    for format in [Format::Iso9660, Format::Vfat] {
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_image(
            &drive_files(&input(&instance, render())).unwrap(),
            format,
            &a,
        )
        .unwrap();
        write_image(
            &drive_files(&input(&instance, render())).unwrap(),
            format,
            &b,
        )
        .unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{format:?} differs between runs"
        );
    }
    // Asking for a fresh seed changes the bytes.
    let mut fresh = input(&instance, render());
    fresh.random_seed = RandomSeed::Fresh;
    let c = dir.path().join("c");
    write_image(&drive_files(&fresh).unwrap(), Format::Iso9660, &c).unwrap();
    assert!(std::fs::read(&c).unwrap() != std::fs::read(dir.path().join("a")).unwrap());
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_behind() {
    let dir = temp_dir();
    let instance = example_instance();
    let mut big = input(&instance, render());
    big.files = vec![InjectedFile {
        guest_path: "/big".into(),
        data: Bytes::from(vec![0u8; 70 * 1024 * 1024]),
    }];
    assert!(matches!(
        drive_files(&big),
        Err(ConfigDriveError::TooLarge(_))
    ));
    let mut relative = input(&instance, render());
    relative.files[0].guest_path = "etc/motd".into();
    assert!(matches!(
        drive_files(&relative),
        Err(ConfigDriveError::BadGuestPath(_))
    ));

    let files = drive_files(&input(&instance, render())).unwrap();
    let missing_dir = dir.path().join("no/such/dir/config.iso");
    let err = write_image(&files, Format::Iso9660, &missing_dir).unwrap_err();
    assert!(err.to_string().contains("cannot write"), "{err}");
    // A failing write leaves no temporary file in the output directory.
    let readonly = dir.path().join("out");
    std::fs::create_dir(&readonly).unwrap();
    let target = readonly.join("config.img");
    std::fs::create_dir(&target).unwrap(); // a directory where the file should go
    assert!(write_image(&files, Format::Vfat, &target).is_err());
    let left: Vec<_> = std::fs::read_dir(&readonly)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("config.img")],
        "temporary files were left: {left:?}"
    );
}
