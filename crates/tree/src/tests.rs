use super::*;

fn seg(path: &str) -> Vec<&str> {
    match MetadataPath::parse(path).unwrap() {
        MetadataPath::Item(s) => s.to_vec(),
        other => panic!("{path} is {other:?}"),
    }
}

fn text(tree: &Tree, path: &str) -> String {
    match &tree
        .lookup(&seg(path))
        .unwrap_or_else(|| panic!("{path} missing"))
        .body
    {
        Body::Static(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("{path} is {other:?}"),
    }
}

fn tree() -> Tree {
    Tree::render(&example_instance(), &RenderOptions::default())
}

#[test]
fn ec2_meta_data_listing_matches_nova() {
    let t = tree();
    assert_eq!(
        text(&t, "/2009-04-04/meta-data/"),
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n\
         instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\n\
         public-hostname\npublic-ipv4\npublic-keys/\nreservation-id\nsecurity-groups"
    );
    assert_eq!(text(&t, "/latest"), "meta-data/\nuser-data");
    assert_eq!(text(&t, "/latest/meta-data/public-keys"), "0=demo-key");
    assert_eq!(text(&t, "/latest/meta-data/public-keys/0"), "openssh-key");
    assert!(text(&t, "/latest/meta-data/public-keys/0/openssh-key").starts_with("ssh-ed25519 "));
    assert_eq!(text(&t, "/latest/meta-data/hostname"), "demo.novalocal");
    assert_eq!(text(&t, "/latest/meta-data/instance-id"), "i-00000042");
    assert_eq!(text(&t, "/latest/meta-data/ami-launch-index"), "0");
    assert_eq!(
        text(&t, "/latest/meta-data/security-groups"),
        "default\nweb"
    );
    assert_eq!(text(&t, "/latest/meta-data/local-ipv4"), "127.0.0.1");
    assert_eq!(
        text(&t, "/latest/meta-data/placement/availability-zone"),
        "nova"
    );
    assert_eq!(
        text(&t, "/latest/meta-data/block-device-mapping"),
        "ami\nephemeral0\nroot"
    );
    assert_eq!(
        text(&t, "/latest/meta-data/block-device-mapping/ami"),
        "vda"
    );
    assert_eq!(
        text(&t, "/ec2/latest/user-data"),
        "#cloud-config\nhostname: demo\npackages: [htop]\n"
    );
}

#[test]
fn ec2_fields_appear_from_their_version() {
    let t = tree();
    assert_eq!(
        text(&t, "/1.0/meta-data"),
        "ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\n\
         public-keys/\nreservation-id\nsecurity-groups"
    );
    assert!(t.lookup(&seg("/1.0/meta-data/local-hostname")).is_none());
    assert!(t
        .lookup(&seg("/2007-01-19/meta-data/local-hostname"))
        .is_some());
    assert!(t
        .lookup(&seg("/2007-03-01/meta-data/instance-type"))
        .is_none());
    assert!(t
        .lookup(&seg("/2007-08-29/meta-data/instance-type"))
        .is_some());
    assert!(t
        .lookup(&seg("/2007-10-10/meta-data/block-device-mapping"))
        .is_none());
    assert!(t
        .lookup(&seg("/2007-12-15/meta-data/block-device-mapping/root"))
        .is_some());
    assert!(t.lookup(&seg("/2007-12-15/meta-data/placement")).is_none());
    assert!(t
        .lookup(&seg("/2008-02-01/meta-data/placement/availability-zone"))
        .is_some());
    assert!(t
        .lookup(&seg("/2008-02-01/meta-data/instance-action"))
        .is_none());
    assert_eq!(text(&t, "/2008-09-01/meta-data/instance-action"), "none");
}

#[test]
fn unknown_versions_and_children_of_leaves_are_absent() {
    let t = tree();
    for path in [
        "/2021-03-23/meta-data/instance-id",
        "/2016-09-02/meta-data/instance-id",
        "/latest/meta-data/hostname/x",
        "/latest/meta-data/security-groups/default",
        "/latest/api/token",
        "/openstack/2011-01-01/meta_data.json",
        "/openstack/latest/meta_data.json/x",
        "/openstack/latest/nothing",
        "/openstack/content/0000",
    ] {
        assert!(t.lookup(&seg(path)).is_none(), "{path} should be absent");
    }
}

#[test]
fn openstack_listings_follow_versions() {
    let t = tree();
    assert_eq!(
        text(&t, "/openstack/2012-08-10"),
        "meta_data.json\nuser_data"
    );
    assert_eq!(
        text(&t, "/openstack/2013-04-04"),
        "meta_data.json\nuser_data\npassword"
    );
    assert_eq!(
        text(&t, "/openstack/2015-10-15"),
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json"
    );
    assert_eq!(
        text(&t, "/openstack/latest"),
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"
    );
    // Nova routes network_data.json for every version.
    assert!(t
        .lookup(&seg("/openstack/2012-08-10/network_data.json"))
        .is_some());
    assert!(t
        .lookup(&seg("/openstack/2013-04-04/vendor_data.json"))
        .is_none());
    assert!(t.lookup(&seg("/openstack/2012-08-10/password")).is_none());
    assert!(t
        .lookup(&seg("/openstack/2016-06-30/vendor_data2.json"))
        .is_none());
}

fn meta_data(t: &Tree, version: &str) -> serde_json::Value {
    let entry = t
        .lookup(&seg(&format!("/openstack/{version}/meta_data.json")))
        .unwrap();
    assert_eq!(entry.content_type, ContentType::Json);
    let body = match &entry.body {
        Body::MetaData { before, after } => {
            let mut b = before.to_vec();
            b.extend_from_slice(b"c2VlZA==");
            b.extend_from_slice(after);
            b
        }
        Body::Static(b) => b.to_vec(),
        other => panic!("{other:?}"),
    };
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn meta_data_json_fields_by_version() {
    let t = tree();
    let folsom = meta_data(&t, "2012-08-10");
    let keys: Vec<&str> = folsom
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "uuid",
            "meta",
            "public_keys",
            "keys",
            "hostname",
            "name",
            "launch_index",
            "availability_zone"
        ]
    );
    let latest = meta_data(&t, "latest");
    let keys: Vec<&str> = latest
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "uuid",
            "meta",
            "public_keys",
            "keys",
            "hostname",
            "name",
            "launch_index",
            "availability_zone",
            "random_seed",
            "project_id",
            "devices",
            "dedicated_cpus"
        ]
    );
    assert_eq!(latest["keys"][0]["type"], "ssh");
    assert_eq!(latest["hostname"], "demo.novalocal");
    assert_eq!(latest["devices"].as_array().unwrap().len(), 3);
    assert_eq!(latest["devices"][0]["vf_trusted"], false);
    // Before Rocky there is no vf_trusted.
    let newton = meta_data(&t, "2016-06-30");
    assert!(newton["devices"][0].get("vf_trusted").is_none());
    assert!(meta_data(&t, "2015-10-15").get("devices").is_none());
    assert!(meta_data(&t, "2018-08-27").get("dedicated_cpus").is_none());
}

#[test]
fn meta_data_uses_python_separators() {
    let t = tree();
    let entry = t.lookup(&seg("/openstack/latest/meta_data.json")).unwrap();
    let Body::MetaData { before, after } = &entry.body else {
        panic!()
    };
    assert!(before.starts_with(b"{\"uuid\": \"6ca6d4c8-"));
    assert!(before.ends_with(b"\"availability_zone\": \"nova\", \"random_seed\": \""));
    assert!(after.starts_with(b"\", \"project_id\": \"f7ac731cc11f40efbc03a9f9e1d1d21f\""));
    assert!(after.ends_with(b"\"dedicated_cpus\": []}"));
}

#[test]
fn nic_without_tags_is_omitted_before_rocky() {
    let mut instance = example_instance();
    instance.devices = vec![serde_json::from_value(serde_json::json!(
        {"type": "nic", "bus": "pci", "address": "0000:00:03.0", "mac": "fa:16:3e:00:00:01"}
    ))
    .unwrap()];
    let t = Tree::render(&instance, &RenderOptions::default());
    assert_eq!(
        meta_data(&t, "2017-02-22")["devices"],
        serde_json::json!([])
    );
    assert_eq!(
        meta_data(&t, "2018-08-27")["devices"],
        serde_json::json!([{"type": "nic", "bus": "pci", "address": "0000:00:03.0",
                            "mac": "fa:16:3e:00:00:01", "vf_trusted": false}])
    );
}

#[test]
fn minimal_record_uses_defaults() {
    let instance: Instance = serde_json::from_value(serde_json::json!({
        "uuid": "0b5c1c77-7f55-4c1a-9a5e-1d2f3e4a5b6c", "name": "min", "hostname": "min",
        "project_id": "p"
    }))
    .unwrap();
    let options = RenderOptions {
        dhcp_domain: String::new(),
        vendor_static: None,
    };
    let t = Tree::render(&instance, &options);
    assert_eq!(text(&t, "/latest/meta-data/hostname"), "min");
    assert_eq!(text(&t, "/latest/meta-data/instance-id"), "i-0b5c1c77");
    assert_eq!(
        text(&t, "/latest/meta-data/placement/availability-zone"),
        "None"
    );
    assert_eq!(
        text(&t, "/latest/meta-data/block-device-mapping"),
        "ami\nephemeral0\nroot\nswap"
    );
    assert_eq!(text(&t, "/latest"), "meta-data/");
    assert!(t.lookup(&seg("/latest/user-data")).is_none());
    assert!(t.lookup(&seg("/latest/meta-data/public-keys")).is_none());
    assert_eq!(
        t.lookup(&seg("/latest/meta-data/local-ipv4")).unwrap().body,
        Body::RequesterAddress
    );
    assert!(t
        .lookup(&seg("/openstack/latest/vendor_data.json"))
        .is_none());
    assert_eq!(text(&t, "/openstack/latest/network_data.json"), "{}");
    assert_eq!(
        meta_data(&t, "latest")["availability_zone"],
        serde_json::Value::Null
    );
}

#[test]
fn generated_network_data_has_one_link_per_port() {
    let mut instance = example_instance();
    instance.network_data = None;
    let doc = openstack::network_data(&instance);
    assert_eq!(doc["links"][0]["id"], "tap1f0c2d3e-4a");
    assert_eq!(doc["networks"][0]["type"], "ipv4_dhcp");
    assert_eq!(doc["services"], serde_json::json!([]));
}

#[test]
fn config_drive_ec2_json_keeps_raw_nesting() {
    let node = ec2::ec2_tree(&example_instance(), &RenderOptions::default(), 8);
    let json = node.to_json(None);
    let md = &json["meta-data"];
    assert_eq!(md["ami-launch-index"], 0);
    assert!(md["public-keys"]["0"]["openssh-key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    assert_eq!(md["placement"]["availability-zone"], "nova");
    assert_eq!(md["local-ipv4"], "127.0.0.1");
    assert_eq!(md["security-groups"], serde_json::json!(["default", "web"]));
}

#[test]
fn example_record_is_valid() {
    example_instance().validate().unwrap();
}

#[test]
fn config_drive_meta_data_carries_files_and_admin_pass_in_novas_place() {
    let extras = openstack::DriveExtras {
        files: vec![("/etc/motd".into(), "/content/0000".into())],
        admin_pass: Some("pw".into()),
    };
    let doc = openstack::meta_data_document(
        &example_instance(),
        &RenderOptions::default(),
        "latest",
        "c2VlZA==",
        &extras,
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        &keys[..5],
        ["uuid", "meta", "files", "admin_pass", "public_keys"]
    );
    assert_eq!(value["files"][0]["content_path"], "/content/0000");
    assert_eq!(value["random_seed"], "c2VlZA==");
}
