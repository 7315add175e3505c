//! Session tokens as botocore's own IMDS client and cloud-init's EC2
//! datasource in its AWS mode use them (Debian's python3-botocore and
//! cloud-init), against `meta169 serve` with tokens optional and required,
//! the key from a file.

mod common;

use common::{clients_dir, start_serve};
use meta169_testkit::{free_port, python, temp_dir};
use serde_json::Value;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Run `client` (a script in testkit's clients) against a `meta169 serve
/// --demo` whose tokens are `mode`; its JSON output.
fn client_against(client: &str, mode: &str) -> Value {
    let dir = temp_dir();
    let key = dir.path().join("token.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let config = dir.path().join("meta169.toml");
    std::fs::write(
        &config,
        format!(
            "[serve.tokens]\nmode = \"{mode}\"\nkey_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let _server = start_serve(
        &format!("serve-{mode}"),
        &[
            "--demo",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        None,
        dir.path(),
    );
    let out = python(
        &clients_dir().join(client),
        &[&format!("http://{listen}/")],
        None,
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn botocore_reads_with_tokens_optional_and_required() {
    let optional = client_against("botocore_imds.py", "optional");
    assert_eq!(optional["token"], true, "{optional}");
    assert_eq!(optional["instance_id"], "i-00000042", "{optional}");
    assert_eq!(optional["without_token"], 200, "{optional}");
    let region = optional["region"].as_str().unwrap_or_default().to_string();
    assert!(!region.is_empty(), "{optional}");

    let required = client_against("botocore_imds.py", "required");
    assert_eq!(required["token"], true, "{required}");
    assert_eq!(required["instance_id"], "i-00000042", "{required}");
    assert_eq!(required["without_token"], 401, "{required}");
    assert_eq!(
        required["region"].as_str(),
        Some(region.as_str()),
        "{required}"
    );
}

#[test]
fn cloud_init_reads_in_aws_mode_with_tokens_optional_and_required() {
    assert!(
        meta169_testkit::cloud_init_installed(),
        "cloud-init is not installed: run scripts/test as root, which installs it"
    );
    for mode in ["optional", "required"] {
        let read = client_against("cloudinit_ec2_aws.py", mode);
        assert_eq!(read["found"], true, "{mode}: {read}");
        assert_eq!(read["token"], true, "{mode}: {read}");
        assert_eq!(read["instance_id"], "i-00000042", "{mode}: {read}");
        assert_eq!(read["hostname"], "demo.novalocal", "{mode}: {read}");
        assert_eq!(
            read["identity"]["availabilityZone"], "nova",
            "{mode}: {read}"
        );
        assert_eq!(
            read["user_data"], "#cloud-config\nhostname: demo\npackages: [htop]\n",
            "{mode}: {read}"
        );
        let keys = read["public_keys"].as_array().cloned().unwrap_or_default();
        assert!(
            keys.iter()
                .any(|k| k.as_str().unwrap_or_default().ends_with("demo@meta169")),
            "{mode}: {read}"
        );
    }
}
