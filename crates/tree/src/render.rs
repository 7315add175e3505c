//! Rendering one instance record into its whole metadata tree: every EC2
//! and OpenStack version, every file and listing, in Nova's conventions.
//! Done once per record change; serving is then a map lookup.

use crate::json::{to_python_json, write_string, write_value};
use crate::model::{DeviceKind, Instance, KNOWN_BUSES};
use crate::versions::{self, ec2, os, EC2_VERSIONS, OPENSTACK_VERSIONS};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Site-wide settings that shape every tree.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Appended to host names as `.<dhcp_domain>`; empty for none (Nova's
    /// `[api] dhcp_domain`, default `novalocal`).
    pub dhcp_domain: String,
    /// The static vendor data document; `None` when the static provider is
    /// off, which makes `vendor_data.json` a 404 as in Nova.
    pub vendor_static: Option<Arc<Value>>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            dhcp_domain: "novalocal".to_string(),
            vendor_static: Some(Arc::new(json!({}))),
        }
    }
}

/// How an entry's body is produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Fixed bytes.
    Static(Bytes),
    /// `meta_data.json`: Nova regenerates `random_seed` on every request, so
    /// the document is kept in two halves and a fresh seed goes between.
    MetaData { before: Bytes, after: Bytes },
    /// EC2 `local-ipv4` of an instance without a fixed IPv4: Nova answers
    /// with the requester's address.
    RequesterAddress,
    /// `vendor_data2.json`: static part plus dynamic targets, built by the server.
    VendorData2,
    /// `password`: the stored password, read by the server.
    Password,
}

/// Content types, as Nova sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Text,
    Json,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text/plain; charset=UTF-8",
            ContentType::Json => "application/json",
        }
    }
}

/// One servable path.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub body: Body,
    pub content_type: ContentType,
}

impl Entry {
    fn text(body: impl Into<Bytes>) -> Self {
        Entry {
            body: Body::Static(body.into()),
            content_type: ContentType::Text,
        }
    }
}

/// A value in the EC2 dictionary, before it is printed.
#[derive(Clone, Debug, PartialEq)]
pub enum Ec2Node {
    /// A directory; `display` replaces `key/` in the parent listing (Nova's
    /// `_name`, how `public-keys` lists `0=<name>`).
    Dir {
        children: BTreeMap<String, Ec2Node>,
        display: Option<String>,
    },
    Text(Bytes),
    Int(i64),
    List(Vec<String>),
    /// The requester's address (see [`Body::RequesterAddress`]).
    Requester,
}

impl Ec2Node {
    fn dir(children: BTreeMap<String, Ec2Node>) -> Self {
        Ec2Node::Dir {
            children,
            display: None,
        }
    }

    fn text(value: impl Into<String>) -> Self {
        Ec2Node::Text(Bytes::from(value.into()))
    }

    /// The JSON form a config drive writes (`ec2/<v>/meta-data.json`): raw
    /// nesting, integers kept, lists as arrays, no display names.
    /// `requester` fills Nova's `local-ipv4` fallback; a config drive has
    /// no requester and writes `null`, as Nova does.
    pub fn to_json(&self, requester: Option<&str>) -> Value {
        match self {
            Ec2Node::Dir { children, .. } => Value::Object(
                children
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json(requester)))
                    .collect(),
            ),
            Ec2Node::Text(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            Ec2Node::Int(i) => json!(i),
            Ec2Node::List(items) => json!(items),
            Ec2Node::Requester => requester.map_or(Value::Null, |r| Value::String(r.to_string())),
        }
    }
}

/// The rendered tree of one instance: immutable, shared behind an `Arc`.
#[derive(Debug)]
pub struct Tree {
    entries: HashMap<Box<str>, Entry>,
}

impl Tree {
    /// Render every path of every version for `instance`.
    pub fn render(instance: &Instance, options: &RenderOptions) -> Tree {
        let mut entries = HashMap::new();
        for version in EC2_VERSIONS {
            let top = ec2_tree(instance, options, ec2(version));
            flatten(&format!("ec2/{version}"), &top, &mut entries);
        }
        for version in OPENSTACK_VERSIONS {
            openstack_entries(instance, options, os(version), &mut entries);
        }
        Tree { entries }
    }

    /// Look up normalised segments (`["ec2", "latest", "meta-data"]`);
    /// `latest` resolves to the newest version of its tree.
    pub fn lookup(&self, segments: &[String]) -> Option<&Entry> {
        let (root, version) = (segments.first()?, segments.get(1)?);
        let canonical = match root.as_str() {
            "ec2" => EC2_VERSIONS[versions::ec2_index(version)?],
            "openstack" if version == "content" => "content",
            "openstack" => OPENSTACK_VERSIONS[versions::openstack_index(version)?],
            _ => return None,
        };
        let mut key = String::with_capacity(64);
        key.push_str(root);
        key.push('/');
        key.push_str(canonical);
        for segment in &segments[2..] {
            key.push('/');
            key.push_str(segment);
        }
        self.entries.get(key.as_str())
    }

    /// Every path in the tree, for tests and tools (unordered).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|k| &**k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn flatten(prefix: &str, node: &Ec2Node, out: &mut HashMap<Box<str>, Entry>) {
    let entry = match node {
        Ec2Node::Dir { children, .. } => {
            let lines: Vec<String> = children
                .iter()
                .map(|(key, child)| match child {
                    Ec2Node::Dir {
                        display: Some(name),
                        ..
                    } => name.clone(),
                    Ec2Node::Dir { .. } => format!("{key}/"),
                    _ => key.clone(),
                })
                .collect();
            for (key, child) in children {
                flatten(&format!("{prefix}/{key}"), child, out);
            }
            Entry::text(lines.join("\n"))
        }
        Ec2Node::Text(bytes) => Entry::text(bytes.clone()),
        Ec2Node::Int(i) => Entry::text(i.to_string()),
        Ec2Node::List(items) => Entry::text(items.join("\n")),
        Ec2Node::Requester => Entry {
            body: Body::RequesterAddress,
            content_type: ContentType::Text,
        },
    };
    out.insert(prefix.into(), entry);
}

/// `<hostname>.<dhcp_domain>`, as Nova's `_get_hostname`.
pub fn full_hostname(instance: &Instance, options: &RenderOptions) -> String {
    if options.dhcp_domain.is_empty() {
        instance.hostname.clone()
    } else {
        format!("{}.{}", instance.hostname, options.dhcp_domain)
    }
}

fn uuid_digest(instance: &Instance) -> [u8; 32] {
    Sha256::digest(instance.uuid.as_bytes()).into()
}

/// EC2 `instance-id`: given, or `i-` + 8 hex digits (the uuid's first eight
/// when it is hex, as ids usually are, else from a hash of it).
pub fn ec2_instance_id(instance: &Instance) -> String {
    if let Some(id) = &instance.ec2_instance_id {
        return id.clone();
    }
    let hex: String = instance
        .uuid
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect();
    if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("i-{}", hex.to_ascii_lowercase())
    } else {
        let d = uuid_digest(instance);
        format!("i-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
    }
}

fn reservation_id(instance: &Instance) -> String {
    if let Some(id) = &instance.reservation_id {
        return id.clone();
    }
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let d = uuid_digest(instance);
    let tail: String = d[..8]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("r-{tail}")
}

fn first_fixed_ipv4(instance: &Instance) -> Option<String> {
    instance
        .ports
        .iter()
        .flat_map(|p| p.ips.iter())
        .find(|ip| ip.is_ipv4())
        .map(IpAddr::to_string)
}

fn block_device_mapping(instance: &Instance) -> BTreeMap<String, Ec2Node> {
    let mut map = BTreeMap::new();
    match &instance.root_device_name {
        Some(root) => {
            let short = root.strip_prefix("/dev/").unwrap_or(root);
            map.insert("ami".to_string(), Ec2Node::text(short));
            map.insert("root".to_string(), Ec2Node::text(root.clone()));
        }
        None => {
            // Nova's fixed mapping for an instance without a root device name.
            for (k, v) in [
                ("ami", "sda1"),
                ("ephemeral0", "sda2"),
                ("root", "/dev/sda1"),
                ("swap", "sda3"),
            ] {
                map.insert(k.to_string(), Ec2Node::text(v));
            }
        }
    }
    for (k, v) in &instance.block_device_mapping {
        map.insert(k.clone(), Ec2Node::text(v.clone()));
    }
    map
}

/// The EC2 dictionary of one version (`meta-data` and `user-data`).
pub fn ec2_tree(instance: &Instance, options: &RenderOptions, version: usize) -> Ec2Node {
    let hostname = full_hostname(instance, options);
    let mut md: BTreeMap<String, Ec2Node> = BTreeMap::new();
    let mut put = |k: &str, v: Ec2Node| {
        md.insert(k.to_string(), v);
    };
    put(
        "ami-id",
        Ec2Node::text(
            instance
                .ami_id
                .clone()
                .unwrap_or_else(|| "ami-00000000".into()),
        ),
    );
    put(
        "ami-launch-index",
        Ec2Node::Int(instance.launch_index.into()),
    );
    put("ami-manifest-path", Ec2Node::text("FIXME"));
    put("instance-id", Ec2Node::text(ec2_instance_id(instance)));
    put("hostname", Ec2Node::text(hostname.clone()));
    put(
        "local-ipv4",
        first_fixed_ipv4(instance).map_or(Ec2Node::Requester, Ec2Node::text),
    );
    put("reservation-id", Ec2Node::text(reservation_id(instance)));
    put(
        "security-groups",
        Ec2Node::List(
            instance
                .security_groups
                .clone()
                .unwrap_or_else(|| vec!["default".to_string()]),
        ),
    );
    if !instance.public_keys.is_empty() {
        let keys = instance
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, (name, key))| {
                let mut child = BTreeMap::new();
                child.insert("openssh-key".to_string(), Ec2Node::text(key.clone()));
                (
                    i.to_string(),
                    Ec2Node::Dir {
                        children: child,
                        display: Some(format!("{i}={name}")),
                    },
                )
            })
            .collect();
        put("public-keys", Ec2Node::dir(keys));
    }
    if version >= ec2("2007-01-19") {
        put("local-hostname", Ec2Node::text(hostname.clone()));
        put("public-hostname", Ec2Node::text(hostname.clone()));
        put(
            "public-ipv4",
            Ec2Node::text(instance.public_ipv4.clone().unwrap_or_default()),
        );
    }
    if version >= ec2("2007-08-29") {
        put(
            "instance-type",
            Ec2Node::text(
                instance
                    .instance_type
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
        );
    }
    if version >= ec2("2007-12-15") {
        put(
            "block-device-mapping",
            Ec2Node::dir(block_device_mapping(instance)),
        );
        if let Some(id) = &instance.kernel_id {
            put("kernel-id", Ec2Node::text(id.clone()));
        }
        if let Some(id) = &instance.ramdisk_id {
            put("ramdisk-id", Ec2Node::text(id.clone()));
        }
    }
    if version >= ec2("2008-02-01") {
        // Nova prints Python's `None` for a missing zone; so do we.
        let zone = instance
            .availability_zone
            .clone()
            .unwrap_or_else(|| "None".into());
        let mut placement = BTreeMap::new();
        placement.insert("availability-zone".to_string(), Ec2Node::text(zone));
        put("placement", Ec2Node::dir(placement));
    }
    if version >= ec2("2008-09-01") {
        put("instance-action", Ec2Node::text("none"));
    }
    let mut top = BTreeMap::new();
    top.insert("meta-data".to_string(), Ec2Node::dir(md));
    if let Some(data) = &instance.user_data {
        top.insert(
            "user-data".to_string(),
            Ec2Node::Text(Bytes::from(data.clone())),
        );
    }
    Ec2Node::dir(top)
}

fn devices_json(instance: &Instance, version: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for device in &instance.devices {
        if !KNOWN_BUSES.contains(&device.bus.as_str()) {
            continue;
        }
        let mut d = Map::new();
        let kind = match device.kind {
            DeviceKind::Nic => "nic",
            DeviceKind::Disk => "disk",
            DeviceKind::Share if version >= os(versions::EPOXY) => "share",
            DeviceKind::Share => continue,
        };
        d.insert("type".into(), json!(kind));
        d.insert("bus".into(), json!(device.bus));
        d.insert("address".into(), json!(device.address));
        match device.kind {
            DeviceKind::Nic => {
                if let Some(mac) = &device.mac {
                    d.insert("mac".into(), json!(mac));
                }
            }
            DeviceKind::Disk => {
                if let Some(serial) = &device.serial {
                    d.insert("serial".into(), json!(serial));
                }
                if let Some(path) = &device.path {
                    d.insert("path".into(), json!(path));
                }
            }
            DeviceKind::Share => {
                if let Some(id) = &device.share_id {
                    d.insert("share_id".into(), json!(id));
                }
                if let Some(tag) = &device.tag {
                    d.insert("tag".into(), json!(tag));
                }
            }
        }
        if !device.tags.is_empty() {
            d.insert("tags".into(), json!(device.tags));
        }
        if device.kind == DeviceKind::Nic {
            if let Some(vlan) = device.vlan.filter(|_| version >= os(versions::OCATA)) {
                d.insert("vlan".into(), json!(vlan));
            }
            if version >= os(versions::ROCKY) {
                d.insert(
                    "vf_trusted".into(),
                    json!(device.vf_trusted.unwrap_or(false)),
                );
            }
            // Nova leaves out a nic that carries none of what it is listed for.
            if !(d.contains_key("tags") || d.contains_key("vlan") || d.contains_key("vf_trusted")) {
                continue;
            }
        }
        out.push(Value::Object(d));
    }
    out
}

/// What only a config drive's `meta_data.json` carries (Nova passes these
/// from the config-drive builder; the metadata service never emits them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriveExtras {
    /// Injected files: (guest path, content path such as `/content/0000`).
    pub files: Vec<(String, String)>,
    /// The admin password given at boot.
    pub admin_pass: Option<String>,
}

/// The fields of `meta_data.json` for one version, in Nova's order, with
/// the position where `random_seed` goes (from 2013-04-04 on).
fn meta_data_fields(
    instance: &Instance,
    options: &RenderOptions,
    version: usize,
    extras: Option<&DriveExtras>,
) -> (Vec<(&'static str, Value)>, Option<usize>) {
    let mut f: Vec<(&'static str, Value)> = vec![("uuid", json!(instance.uuid))];
    if !instance.meta.is_empty() {
        f.push(("meta", json!(instance.meta)));
    }
    if let Some(extras) = extras {
        if !extras.files.is_empty() {
            let files: Vec<Value> = extras
                .files
                .iter()
                .map(|(path, content)| json!({"path": path, "content_path": content}))
                .collect();
            f.push(("files", Value::Array(files)));
        }
        if let Some(pass) = &extras.admin_pass {
            f.push(("admin_pass", json!(pass)));
        }
    }
    if !instance.public_keys.is_empty() {
        f.push(("public_keys", json!(instance.public_keys)));
        let keys: Vec<Value> = instance
            .public_keys
            .iter()
            .map(|(name, data)| json!({"name": name, "type": "ssh", "data": data}))
            .collect();
        f.push(("keys", Value::Array(keys)));
    }
    f.push(("hostname", json!(full_hostname(instance, options))));
    f.push(("name", json!(instance.name)));
    f.push(("launch_index", json!(instance.launch_index)));
    f.push(("availability_zone", json!(instance.availability_zone)));
    let seed_at = (version >= os(versions::GRIZZLY)).then_some(f.len());
    if version >= os(versions::LIBERTY) {
        f.push(("project_id", json!(instance.project_id)));
    }
    if version >= os(versions::NEWTON_ONE) {
        f.push(("devices", Value::Array(devices_json(instance, version))));
    }
    if version >= os(versions::VICTORIA) {
        let mut cpus = instance.dedicated_cpus.clone();
        cpus.sort_unstable();
        f.push(("dedicated_cpus", json!(cpus)));
    }
    (f, seed_at)
}

fn write_fields(out: &mut String, fields: &[(&str, Value)]) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_string(out, k);
        out.push_str(": ");
        write_value(out, v);
    }
}

/// `meta_data.json` split around the random seed.
fn meta_data_body(
    instance: &Instance,
    options: &RenderOptions,
    version: usize,
    extras: Option<&DriveExtras>,
) -> Body {
    let (fields, seed_at) = meta_data_fields(instance, options, version, extras);
    let mut before = String::from("{");
    match seed_at {
        None => {
            write_fields(&mut before, &fields);
            before.push('}');
            Body::Static(Bytes::from(before))
        }
        Some(at) => {
            write_fields(&mut before, &fields[..at]);
            before.push_str(", \"random_seed\": \"");
            let mut after = String::from("\"");
            if at < fields.len() {
                after.push_str(", ");
                write_fields(&mut after, &fields[at..]);
            }
            after.push('}');
            Body::MetaData {
                before: Bytes::from(before),
                after: Bytes::from(after),
            }
        }
    }
}

/// `meta_data.json` as one document with a given seed and the config
/// drive's extras.
pub fn meta_data_document(
    instance: &Instance,
    options: &RenderOptions,
    version: &str,
    random_seed: &str,
    extras: &DriveExtras,
) -> Option<String> {
    let index = versions::openstack_index(version)?;
    Some(
        match meta_data_body(instance, options, index, Some(extras)) {
            Body::MetaData { before, after } => {
                let mut s = String::from_utf8_lossy(&before).into_owned();
                s.push_str(random_seed);
                s.push_str(&String::from_utf8_lossy(&after));
                s
            }
            Body::Static(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => unreachable!("meta_data_body yields MetaData or Static"),
        },
    )
}

/// `network_data.json`: the record's own document, or one link per port
/// with DHCP on its first IPv4 address. An instance without ports gets
/// `{}`, as Nova gives an instance without network info.
pub fn network_data(instance: &Instance) -> Value {
    if let Some(doc) = &instance.network_data {
        return doc.clone();
    }
    if instance.ports.is_empty() {
        return json!({});
    }
    let mut links = Vec::new();
    let mut networks = Vec::new();
    for (i, port) in instance.ports.iter().enumerate() {
        let link_id = match &port.id {
            Some(id) => format!("tap{}", id.chars().take(11).collect::<String>()),
            None => format!("interface{i}"),
        };
        links.push(json!({
            "id": link_id,
            "vif_id": port.id.clone().unwrap_or_default(),
            "type": "phy",
            "mtu": null,
            "ethernet_mac_address": port.mac.to_ascii_lowercase(),
        }));
        if port.ips.iter().any(IpAddr::is_ipv4) {
            networks.push(json!({
                "id": format!("network{}", networks.len()),
                "type": "ipv4_dhcp",
                "link": link_id,
                "network_id": port.network_id,
            }));
        }
    }
    json!({"links": links, "networks": networks, "services": []})
}

/// The static vendor data, `{}` when none is configured.
pub fn vendor_static_json(options: &RenderOptions) -> Option<String> {
    options.vendor_static.as_ref().map(|v| to_python_json(v))
}

fn openstack_entries(
    instance: &Instance,
    options: &RenderOptions,
    version: usize,
    out: &mut HashMap<Box<str>, Entry>,
) {
    let name = OPENSTACK_VERSIONS[version];
    let mut put = |file: &str, entry: Entry| {
        out.insert(format!("openstack/{name}/{file}").into(), entry);
    };
    let mut listing = vec!["meta_data.json"];
    put(
        "meta_data.json",
        Entry {
            body: meta_data_body(instance, options, version, None),
            content_type: ContentType::Json,
        },
    );
    if let Some(data) = &instance.user_data {
        listing.push("user_data");
        put("user_data", Entry::text(data.clone()));
    }
    if version >= os(versions::GRIZZLY) {
        listing.push("password");
        put(
            "password",
            Entry {
                body: Body::Password,
                content_type: ContentType::Text,
            },
        );
    }
    if version >= os(versions::HAVANA) {
        listing.push("vendor_data.json");
        if let Some(doc) = vendor_static_json(options) {
            put(
                "vendor_data.json",
                Entry {
                    body: Body::Static(Bytes::from(doc)),
                    content_type: ContentType::Json,
                },
            );
        }
    }
    // Nova serves network_data.json for every version but lists it only
    // from Liberty on.
    if version >= os(versions::LIBERTY) {
        listing.push("network_data.json");
    }
    put(
        "network_data.json",
        Entry::text(to_python_json(&network_data(instance))),
    );
    if version >= os(versions::NEWTON_TWO) {
        listing.push("vendor_data2.json");
        put(
            "vendor_data2.json",
            Entry {
                body: Body::VendorData2,
                content_type: ContentType::Json,
            },
        );
    }
    out.insert(
        format!("openstack/{name}").into(),
        Entry::text(listing.join("\n")),
    );
}
