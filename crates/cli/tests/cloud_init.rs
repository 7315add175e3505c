//! Conformance: cloud-init's own OpenStack and EC2 readers, from Debian's
//! package, read a running meta169 and get exactly the registered instance.
//!
//! Topology (all inside namespaces this test creates): a "vm" namespace with
//! 10.0.0.5/24 and a route to 169.254.169.254 via 10.0.0.1, as DHCP option
//! 121 would install; a "server" namespace with 10.0.0.1/24 and
//! 169.254.169.254/32 where `meta169 serve` listens on port 80 and knows
//! the guest by its source address. cloud-init's fixed EC2 address is thus
//! served for real.

mod common;

use common::{clients_dir, serve_in_namespace};
use meta169_testkit::{cloud_init_installed, python, temp_dir, Netns};
use serde_json::Value;

#[test]
fn cloud_init_reads_what_was_registered() {
    assert!(
        cloud_init_installed(),
        "Debian's cloud-init is not installed: run scripts/test (it installs it)"
    );
    let dir = temp_dir();
    let vm = Netns::new("vm");
    let srv = Netns::new("srv");
    let (vm_if, srv_if) = (
        format!("v{}", std::process::id() % 100000),
        format!("s{}", std::process::id() % 100000),
    );
    vm.ip(&[
        "link", "add", &vm_if, "type", "veth", "peer", "name", &srv_if, "netns", &srv.name,
    ]);
    vm.ip(&["addr", "add", "10.0.0.5/24", "dev", &vm_if]);
    vm.ip(&["link", "set", &vm_if, "up"]);
    vm.ip(&["route", "add", "169.254.169.254/32", "via", "10.0.0.1"]);
    srv.ip(&["addr", "add", "10.0.0.1/24", "dev", &srv_if]);
    srv.ip(&["addr", "add", "169.254.169.254/32", "dev", &srv_if]);
    srv.ip(&["link", "set", &srv_if, "up"]);

    let mut instance = meta169_tree::example_instance();
    instance.ports[0].ips = vec!["10.0.0.5".parse().unwrap()];
    instance.files = vec![meta169_tree::model::InjectedFile {
        path: "/etc/motd".into(),
        content: "hello from meta169\n".into(),
    }];
    let record = dir.path().join("instance.json");
    std::fs::write(&record, serde_json::to_string(&instance).unwrap()).unwrap();
    let _server = serve_in_namespace(
        &srv,
        dir.path(),
        "[serve.identity]\nby_source = true\nsigned = false\nby_address = false\n",
        &record,
    );

    let out = python(
        &clients_dir().join("cloudinit_read.py"),
        &["http://169.254.169.254"],
        Some(&vm),
    );
    let read: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let os = &read["openstack"];
    let md = &os["metadata"];
    assert_eq!(md["uuid"], instance.uuid);
    assert_eq!(md["hostname"], "demo.novalocal");
    assert_eq!(md["name"], instance.name);
    assert_eq!(md["project_id"], instance.project_id);
    assert_eq!(md["availability_zone"], "nova");
    assert_eq!(
        md["public_keys"]["demo-key"],
        instance.public_keys["demo-key"]
    );
    assert_eq!(md["meta"]["role"], "webserver");
    assert_eq!(md["devices"].as_array().unwrap().len(), 3);
    // Injected files, fetched by cloud-init from their content_path.
    assert_eq!(os["files"]["/etc/motd"], "hello from meta169\n", "{os}");
    assert_eq!(
        os["userdata"].as_str().unwrap().as_bytes(),
        instance.user_data.as_deref().unwrap()
    );
    assert_eq!(os["networkdata"], instance.network_data.clone().unwrap());
    // The files again as vendor data: cloud-init's OpenStack datasource
    // reads `files` but only its ConfigDrive datasource writes them.
    let vendor = os["vendordata"]["cloud-init"].as_str().unwrap_or_default();
    assert!(
        vendor.starts_with("#cloud-config\n") && vendor.contains("\"path\":\"/etc/motd\""),
        "{vendor}"
    );
    assert_eq!(os["vendordata2"], serde_json::json!({"static": {}}));
    // The EC2 crawl cloud-init makes during the OpenStack read, from the fixed address.
    let ec2 = &os["ec2-metadata"];
    assert_eq!(ec2["instance-id"], "i-00000042");
    assert_eq!(ec2["local-ipv4"], "10.0.0.5");
    assert_eq!(ec2["placement"]["availability-zone"], "nova");
    assert_eq!(
        ec2["security-groups"],
        serde_json::json!(["default", "web"])
    );
    assert_eq!(ec2["block-device-mapping"]["root"], "/dev/vda");
    assert_eq!(
        ec2["public-keys"]["demo-key"],
        serde_json::json!([instance.public_keys["demo-key"].trim_end()])
    );
    // And cloud-init's EC2 helpers directly.
    assert_eq!(read["ec2_metadata"]["hostname"], "demo.novalocal");
    assert_eq!(read["ec2_metadata"]["ami-id"], "ami-0000001a");
    assert_eq!(
        read["ec2_userdata"].as_str().unwrap().as_bytes(),
        instance.user_data.as_deref().unwrap()
    );
}
