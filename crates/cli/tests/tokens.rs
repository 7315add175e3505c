//! Session tokens as botocore's own IMDS client uses them (Debian's
//! python3-botocore), against `meta169 serve` with tokens optional and
//! required, the key from a file.

mod common;

use common::{clients_dir, start_serve};
use meta169_testkit::{free_port, python, temp_dir};
use serde_json::Value;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn botocore_against(mode: &str) -> Value {
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
        ],
        None,
        dir.path(),
    );
    let out = python(
        &clients_dir().join("botocore_imds.py"),
        &[&format!("http://{listen}/")],
        None,
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn botocore_reads_with_tokens_optional_and_required() {
    let optional = botocore_against("optional");
    assert_eq!(optional["token"], true, "{optional}");
    assert_eq!(optional["instance_id"], "i-00000042", "{optional}");
    assert_eq!(optional["without_token"], 200, "{optional}");
    let region = optional["region"].as_str().unwrap_or_default().to_string();
    assert!(!region.is_empty(), "{optional}");

    let required = botocore_against("required");
    assert_eq!(required["token"], true, "{required}");
    assert_eq!(required["instance_id"], "i-00000042", "{required}");
    assert_eq!(required["without_token"], 401, "{required}");
    assert_eq!(
        required["region"].as_str(),
        Some(region.as_str()),
        "{required}"
    );
}
