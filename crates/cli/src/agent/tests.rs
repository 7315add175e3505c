use super::*;
use crate::config::agent::RateLimitSection;
use crate::config::neutron_ini::neutron_rate_limit;
use meta169_agent::RateLimits;

#[test]
fn neutron_ini_keys_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("neutron_ovn_metadata_agent.ini");
    std::fs::write(
        &path,
        "[DEFAULT]\nnova_metadata_host = 10.1.2.3\nnova_metadata_port = 8775\nnova_metadata_protocol = https\n\
         metadata_proxy_shared_secret = s3cret\nnova_metadata_insecure = True\nstate_path = /var/lib/neutron\n\
         metadata_proxy_socket = $state_path/metadata_proxy\n\n[ovs]\novsdb_connection = unix:/run/openvswitch/db.sock\n\n\
         [ovn]\novn_sb_connection = ssl:10.0.0.1:6642,ssl:10.0.0.2:6642\novn_sb_private_key = /etc/k.pem\n\n\
         [metadata_rate_limiting]\nrate_limit_enabled = True\nip_versions = 4,6\nbase_query_rate_limit = 30\n",
    )
    .unwrap();
    let ini = read_neutron_ini(&path).unwrap();
    assert_eq!(ini.upstream.as_deref(), Some("https://10.1.2.3:8775"));
    assert_eq!(ini.shared_secret.as_deref(), Some("s3cret"));
    assert_eq!(ini.insecure, Some(true));
    assert_eq!(
        ini.ovn_sb.as_deref(),
        Some("ssl:10.0.0.1:6642,ssl:10.0.0.2:6642")
    );
    assert_eq!(
        ini.haproxy_socket,
        Some(PathBuf::from("/var/lib/neutron/metadata_proxy"))
    );
    assert_eq!(ini.ovs_db.as_deref(), Some("unix:/run/openvswitch/db.sock"));
    assert_eq!(ini.tls.private_key, Some(PathBuf::from("/etc/k.pem")));
    let args = AgentArgs {
        config: None,
        neutron_config: Some(path),
        ovn_sb: Some("tcp:127.0.0.1:16642".into()),
        ovs_db: None,
        chassis: None,
        upstream: None,
        shared_secret_file: None,
        bridge: Some("linux:br-meta".into()),
        haproxy_socket: None,
        status_socket: None,
        ops_listen: None,
    };
    let s = settings(&args).unwrap();
    assert_eq!(
        s.sb.to_string(),
        "tcp:127.0.0.1:16642",
        "flags win over the ini"
    );
    assert!(s.sb_more.is_empty());
    let from_ini = settings(&AgentArgs {
        ovn_sb: None,
        ..args.clone()
    })
    .unwrap();
    assert_eq!(from_ini.sb.to_string(), "ssl:10.0.0.1:6642");
    let more: Vec<String> = from_ini.sb_more.iter().map(|r| r.to_string()).collect();
    assert_eq!(more, ["ssl:10.0.0.2:6642"]);
    assert_eq!(s.upstream.url, "https://10.1.2.3:8775");
    assert_eq!(s.upstream.shared_secret, b"s3cret");
    assert_eq!(s.bridge, BridgeMode::Linux("br-meta".into()));
    assert_eq!(socket_mode(Some("all")).unwrap(), 0o666);
    assert_eq!(socket_mode(Some("0660")).unwrap(), 0o660);
    assert_eq!(socket_mode(None).unwrap(), 0o644);
    assert!(socket_mode(Some("everyone")).is_err());
    assert_eq!(s.upstream.pipelining, Pipelining::Auto);
    assert_eq!(
        s.rate_limits,
        Some(RateLimits {
            base_limit: 30,
            ipv6: true,
            ..RateLimits::default()
        })
    );
}

#[test]
fn upstream_pipelining_comes_from_the_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let args = |text: &str| {
        let path = dir.path().join("meta169.toml");
        std::fs::write(&path, format!("[agent]\n{text}\n")).unwrap();
        AgentArgs {
            config: Some(path),
            neutron_config: None,
            ovn_sb: None,
            ovs_db: None,
            chassis: None,
            upstream: None,
            shared_secret_file: None,
            bridge: None,
            haproxy_socket: None,
            status_socket: None,
            ops_listen: None,
        }
    };
    let off = settings(&args("upstream_pipelining = \"off\"")).unwrap();
    assert_eq!(off.upstream.pipelining, Pipelining::Off);
    assert_eq!(off.rate_limits, None, "no rate limits unless enabled");
    let wrong = settings(&args("upstream_pipelining = \"sometimes\""))
        .err()
        .unwrap()
        .to_string();
    assert!(wrong.contains("not one of auto, on, off"), "{wrong}");
}

#[test]
fn rate_limits_take_neutrons_keys_and_refuse_nonsense() {
    let section = |text: &str| -> RateLimitSection {
        let file: ConfigFile = toml::from_str(&format!("[agent.rate_limit]\n{text}")).unwrap();
        file.agent.rate_limit
    };
    let limits =
        section("rate_limit_enabled = true\nburst_window_duration = 2\nburst_query_rate_limit = 4")
            .limits()
            .unwrap()
            .unwrap();
    assert_eq!(limits.burst_window, Duration::from_secs(2));
    assert_eq!((limits.burst_limit, limits.base_limit), (4, 10));
    assert!((limits.ipv4, limits.ipv6) == (true, false));
    for bad in [
        "rate_limit_enabled = true\nip_versions = [5]",
        "rate_limit_enabled = true\nip_versions = []",
        "rate_limit_enabled = true\nbase_window_duration = 0",
        "rate_limit_enabled = true\nburst_query_rate_limit = 0",
    ] {
        assert!(section(bad).limits().is_err(), "{bad}");
    }
    // The TOML file wins key by key over Neutron's ini.
    let ini = RateLimitSection {
        rate_limit_enabled: Some(true),
        base_query_rate_limit: Some(50),
        ..RateLimitSection::default()
    };
    let merged = section("base_query_rate_limit = 7")
        .or(&ini)
        .limits()
        .unwrap()
        .unwrap();
    assert_eq!(merged.base_limit, 7);
    let junk = |key: &str, value: &str| {
        let (key, value) = (key.to_string(), value.to_string());
        neutron_rate_limit(&move |k| (k == key).then(|| value.clone()))
    };
    assert!(junk("ip_versions", "4,x").is_err());
    assert!(junk("base_window_duration", "ten").is_err());
}
