//! The OpenStack side: `meta_data.json` (fields gated by version, Python's
//! JSON formatting, the random seed's place), `network_data.json`, the
//! vendor data documents and each version's listing.

use crate::json::{to_python_json, write_string, write_value};
use crate::model::{DeviceKind, Instance, KNOWN_BUSES};
use crate::tree::{full_hostname, Body, ContentType, Entry, RenderOptions};
use crate::versions::{self, os};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

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

/// The record's injected files as `meta_data.json` lists them: (guest
/// path, content path `/content/NNNN`), numbered from 0. A config drive
/// numbers its `--file` additions after them.
pub fn record_files(instance: &Instance) -> Vec<(String, String)> {
    instance
        .files
        .iter()
        .enumerate()
        .map(|(i, file)| (file.path.clone(), content_path(i)))
        .collect()
}

/// The content path of the `index`th injected file.
pub fn content_path(index: usize) -> String {
    format!("/{}/{index:04}", crate::tree::CONTENT)
}

/// What only a config drive's `meta_data.json` carries (Nova passes these
/// from the config-drive builder; the metadata service never emits them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriveExtras {
    /// Injected files: (guest path, content path such as `/content/0000`),
    /// the record's ([`record_files`]) and then the drive's own.
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
    let from_record;
    let files = match extras {
        Some(extras) => &extras.files,
        None => {
            from_record = record_files(instance);
            &from_record
        }
    };
    if !files.is_empty() {
        let files: Vec<Value> = files
            .iter()
            .map(|(path, content)| json!({"path": path, "content_path": content}))
            .collect();
        f.push(("files", Value::Array(files)));
    }
    if let Some(extras) = extras {
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
/// with DHCP on its first IPv4 address (or on a port with no address). An instance without ports gets
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
        // A port with no address (a record that knows only the MAC) is
        // addressed by DHCP too.
        if port.ips.is_empty() || port.ips.iter().any(IpAddr::is_ipv4) {
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

/// The record's injected files as a cloud-config that writes them. Only
/// cloud-init's ConfigDrive datasource writes `files` itself; the
/// OpenStack datasource over HTTP and NoCloud get them as vendor data.
pub fn files_cloud_config(instance: &Instance) -> Option<String> {
    if instance.files.is_empty() {
        return None;
    }
    let files: Vec<Value> = instance
        .files
        .iter()
        .map(|file| {
            json!({
                "path": file.path,
                "content": base64::engine::general_purpose::STANDARD.encode(&file.content),
                "encoding": "b64",
            })
        })
        .collect();
    Some(format!(
        "#cloud-config\n{}\n",
        serde_json::to_string(&json!({ "write_files": files })).unwrap_or_default()
    ))
}

/// The `cloud-init` part of vendor data: the static document's, the
/// record's files, or both as a list of parts (cloud-init processes each).
pub fn vendor_cloud_init(instance: &Instance, options: &RenderOptions) -> Option<Value> {
    let static_part = options
        .vendor_static
        .as_ref()
        .and_then(|doc| doc.get("cloud-init"))
        .cloned();
    match (static_part, files_cloud_config(instance)) {
        (None, None) => None,
        (Some(part), None) => Some(part),
        (None, Some(files)) => Some(Value::String(files)),
        (Some(Value::Array(mut parts)), Some(files)) => {
            parts.push(Value::String(files));
            Some(Value::Array(parts))
        }
        (Some(part), Some(files)) => Some(json!([part, files])),
    }
}

/// `vendor_data.json`: the static document with the record's files added
/// to its `cloud-init` part; `None` when the static provider is off.
pub fn vendor_data_json(instance: &Instance, options: &RenderOptions) -> Option<String> {
    let doc = options.vendor_static.as_ref()?;
    if instance.files.is_empty() {
        return Some(to_python_json(doc));
    }
    let mut doc = match &**doc {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(part) = vendor_cloud_init(instance, options) {
        doc.insert("cloud-init".into(), part);
    }
    Some(to_python_json(&Value::Object(doc)))
}

/// A version's files, keyed by name (`""` for the version's listing).
pub(crate) fn openstack_entries(
    instance: &Instance,
    options: &RenderOptions,
    version: usize,
) -> Vec<(String, Entry)> {
    let mut out = Vec::with_capacity(8);
    let mut put = |file: &str, entry: Entry| {
        out.push((file.to_string(), entry));
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
        if let Some(doc) = vendor_data_json(instance, options) {
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
    out.push((String::new(), Entry::text(listing.join("\n"))));
    out
}
