//! Identity by MAC on a flat network: `meta169 serve` in a namespace with
//! a bridge, guests in namespaces of their own taking any address (as from
//! DHCP), records that carry only a MAC. The guest is found through the
//! kernel's neighbour table, keeps its identity when it moves to another
//! address, and an unregistered guest that takes a registered guest's old
//! address is not given its data.

mod common;

use common::serve_in_namespace;
use meta169_testkit::{temp_dir, Netns};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A guest namespace on `srv`'s bridge with `mac` and the route to
/// 169.254.169.254.
fn guest(srv: &Netns, bridge: &str, tag: &str, mac: &str) -> Netns {
    let ns = Netns::new(tag);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let outer = format!("bm{}x{n}", std::process::id() % 100_000);
    srv.ip(&[
        "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    srv.ip(&["link", "set", &outer, "master", bridge, "up"]);
    ns.ip(&["link", "set", "eth0", "address", mac, "up"]);
    ns
}

fn take_address(ns: &Netns, cidr: &str) {
    ns.ip(&["addr", "flush", "dev", "eth0"]);
    ns.ip(&["addr", "add", cidr, "dev", "eth0"]);
    ns.ip(&["route", "replace", "169.254.169.254/32", "via", "10.0.0.1"]);
}

/// GET `path` from inside `ns`, from `source`: (status, body).
fn get(ns: &Netns, source: &str, path: &str) -> (u16, String) {
    let (name, source, path) = (
        ns.name.clone(),
        source.parse::<IpAddr>().unwrap(),
        path.to_string(),
    );
    meta169_agent::netns::run_in(&name, move || {
        meta169_testkit::http_get_from(
            source,
            "169.254.169.254:80".parse().unwrap(),
            &path,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
    })
    .unwrap_or((0, String::new()))
}

#[test]
fn guests_are_found_by_mac_wherever_dhcp_puts_them() {
    let dir = temp_dir();
    let srv = Netns::new("srv");
    let bridge = "br0";
    srv.ip(&["link", "add", bridge, "type", "bridge"]);
    srv.ip(&["addr", "add", "10.0.0.1/24", "dev", bridge]);
    srv.ip(&["addr", "add", "169.254.169.254/32", "dev", bridge]);
    srv.ip(&["link", "set", bridge, "up"]);
    let registered = guest(&srv, bridge, "vm1", "fa:16:3e:00:00:01");
    let stranger = guest(&srv, bridge, "vm2", "fa:16:3e:00:00:02");

    // A record with only a MAC: no address known in advance.
    let record = dir.path().join("instance.json");
    std::fs::write(
        &record,
        r#"{"uuid": "by-mac-1", "name": "dhcp-guest", "hostname": "dhcp-guest",
            "ports": [{"network_id": "lan", "mac": "FA:16:3E:00:00:01"}]}"#,
    )
    .unwrap();
    let _server = serve_in_namespace(
        &srv,
        dir.path(),
        "[serve.identity]\nsigned = false\nby_address = false\nby_source = false\nby_mac = true\n",
        &record,
    );

    take_address(&registered, "10.0.0.5/24");
    assert_eq!(
        get(&registered, "10.0.0.5", "/latest/meta-data/hostname"),
        (200, "dhcp-guest.novalocal".to_string())
    );
    // local-ipv4 is the address the guest came from.
    assert_eq!(
        get(&registered, "10.0.0.5", "/latest/meta-data/local-ipv4"),
        (200, "10.0.0.5".to_string())
    );

    // The guest moves to another address: still itself.
    take_address(&registered, "10.0.0.6/24");
    assert_eq!(
        get(&registered, "10.0.0.6", "/latest/meta-data/hostname"),
        (200, "dhcp-guest.novalocal".to_string())
    );

    // An unregistered guest takes the old address: its ARP replaces the
    // neighbour entry, and it is nobody.
    take_address(&stranger, "10.0.0.5/24");
    let (status, body) = get(&stranger, "10.0.0.5", "/latest/meta-data/hostname");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("fa:16:3e:00:00:02"), "{body}");
    // The registered guest is still found at its new address.
    assert_eq!(
        get(&registered, "10.0.0.6", "/openstack/latest/meta_data.json").0,
        200
    );
}
