//! The Debian package `scripts/package` builds (scripts/test builds it
//! before the tests): its contents, conffile and maintainer scripts, its
//! units verified by systemd-analyze, and the installed binary running
//! with the installed default configuration from a scratch root.

use meta169_testkit::{free_port, read_log, run_tool, temp_dir, wait_until, Process};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The newest package in target/debian.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect()
        })
        .unwrap_or_default();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no package in {}: run scripts/package (scripts/test does)",
            dir.display()
        )
    })
}

#[test]
fn the_package_holds_the_binary_config_units_and_docs() {
    let deb = package();
    let deb = deb.to_str().unwrap();
    let contents = run_tool("dpkg-deb", &["--contents", deb]);
    for path in [
        "./usr/bin/meta169",
        "./etc/meta169/meta169.toml",
        "./usr/lib/systemd/system/meta169-serve.service",
        "./usr/lib/systemd/system/meta169-agent.service",
        "./usr/lib/tmpfiles.d/meta169-agent.conf",
        "./usr/share/man/man1/meta169.1.gz",
        "./usr/share/doc/meta169/operations.md",
        "./usr/share/doc/meta169/grafana-dashboard.json",
        "./usr/share/doc/meta169/changelog.Debian.gz",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    let control = temp_dir();
    run_tool("dpkg-deb", &["-e", deb, control.path().to_str().unwrap()]);
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/meta169/meta169.toml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    let fields = run_tool("dpkg-deb", &["--field", deb, "Depends"]);
    assert!(
        fields.contains("adduser") && fields.contains("iproute2"),
        "{fields}"
    );
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let root = temp_dir();
    run_tool(
        "dpkg",
        &[
            "-x",
            package().to_str().unwrap(),
            root.path().to_str().unwrap(),
        ],
    );
    // The host's own units (targets, sockets) beside the package's, so the
    // package's dependencies resolve as on an installed system.
    let units = root.path().join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system")
        .unwrap()
        .flatten()
    {
        let target = units.join(entry.file_name());
        if !target.exists() && entry.path().is_file() {
            let _ = std::fs::copy(entry.path(), target);
        }
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args([
            "usr/lib/systemd/system/meta169-serve.service",
            "usr/lib/systemd/system/meta169-agent.service",
        ])
        .current_dir(root.path())
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "{said}");
    let agent = std::fs::read_to_string(units.join("meta169-agent.service")).unwrap();
    assert!(agent.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_BIND_SERVICE"));
    assert!(agent.contains("Conflicts=neutron-ovn-metadata-agent.service"));
}

#[test]
fn the_installed_binary_runs_with_the_installed_configuration() {
    let root = temp_dir();
    run_tool(
        "dpkg",
        &[
            "-x",
            package().to_str().unwrap(),
            root.path().to_str().unwrap(),
        ],
    );
    let binary = root.path().join("usr/bin/meta169");
    let config = root.path().join("etc/meta169/meta169.toml");
    let version = run_tool(binary.to_str().unwrap(), &["--version"]);
    assert!(version.starts_with("meta169 "), "{version}");
    // The installed defaults, but for the store (its directory is
    // /var/lib/meta169 on an installed system) and the ports, chosen free.
    let store = format!("sqlite://{}/meta169.db", root.path().display());
    let (listen, admin, ops) = (free_port(), free_port(), free_port());
    let (listen, admin, ops) = (
        format!("127.0.0.1:{listen}"),
        format!("127.0.0.1:{admin}"),
        format!("127.0.0.1:{ops}"),
    );
    let mut serve = Command::new(&binary);
    serve.arg("serve").arg("--config").arg(&config).args([
        "--store",
        &store,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--ops-listen",
        &ops,
    ]);
    let _serve = Process::start("installed", serve, root.path());
    let ready = || {
        meta169_testkit::http_get_from(
            "127.0.0.1".parse().unwrap(),
            ops.parse().unwrap(),
            "/readyz",
            Duration::from_secs(1),
            Duration::from_secs(2),
        )
        .is_ok_and(|(status, _)| status == 200)
    };
    assert!(
        wait_until(Duration::from_secs(20), ready),
        "{}",
        read_log(&root.path().join("installed.log"))
    );
}
