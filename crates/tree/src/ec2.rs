//! The EC2 side: the `meta-data` dictionary of each EC2 version, with
//! Nova's fields, defaults and listings.

use crate::model::Instance;
use crate::tree::{full_hostname, Body, ContentType, Entry, RenderOptions};
use crate::versions::ec2;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;

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

/// The entries of a version's dictionary, keyed by path below the version
/// (`""` for the top listing).
pub(crate) fn flatten(prefix: &str, node: &Ec2Node, out: &mut Vec<(String, Entry)>) {
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
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}/{key}")
                };
                flatten(&path, child, out);
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
    out.push((prefix.to_string(), entry));
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
        top.insert("user-data".to_string(), Ec2Node::Text(data.clone()));
    }
    Ec2Node::dir(top)
}
