//! The instance record: what an orchestrator registers and what the trees
//! are rendered from. Field names follow Nova's `meta_data.json` wherever
//! Nova has the field, so a record reads like the document it produces.

use base64::Engine as _;
use bytes::Bytes;
use indexmap::IndexMap;
use meta169_http::mac::parse_mac;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Largest user data accepted, decoded. Nova caps the base64 text at 65535
/// characters; we cap the bytes, which is a little more generous.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;
/// Longest identifier (uuid, project id, network id) accepted.
pub const MAX_ID_LEN: usize = 255;
/// Largest number of ports one instance may have.
pub const MAX_PORTS: usize = 64;

/// One instance, as registered by an orchestrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// The instance UUID; cloud-init's instance-id.
    pub uuid: String,
    /// Display name (`name` in meta_data.json).
    pub name: String,
    /// Short host name; the API appends `.<dhcp_domain>` like Nova.
    pub hostname: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Owning project; must equal `X-Tenant-ID` on signed requests.
    pub project_id: String,
    #[serde(default)]
    pub launch_index: u32,
    /// Key pair name → public key text, as in meta_data.json.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub public_keys: IndexMap<String, String>,
    /// User-set instance metadata (`meta` in meta_data.json).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub meta: IndexMap<String, String>,
    /// Tagged devices (`devices` in meta_data.json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Host CPUs pinned to the instance (`dedicated_cpus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedicated_cpus: Vec<u32>,
    /// User data, base64 in JSON, raw bytes in memory (shared, not copied,
    /// by the trees that serve it).
    #[serde(default, with = "base64_opt", skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Bytes>,
    /// The instance's ports: how a request is tied to it by address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// A complete `network_data.json` document; generated from `ports` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<serde_json::Value>,
    /// Glance image id, sent to dynamic vendordata targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,

    // EC2-only fields; each has a documented default.
    /// `ami-id`; default `ami-00000000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    /// `instance-id`; default `i-` + 8 hex digits derived from the uuid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    /// `instance-type` (the flavor name); default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// `reservation-id`; default `r-` + 8 characters derived from the uuid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// `security-groups`; default `["default"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramdisk_id: Option<String>,
    /// `public-ipv4` (first floating IP); default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ipv4: Option<String>,
    /// Root device, e.g. `/dev/vda`; feeds `block-device-mapping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_name: Option<String>,
    /// Extra `block-device-mapping` entries (`ephemeral0`, `swap`, `ebs0`, ...).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub block_device_mapping: IndexMap<String, String>,
}

/// A port of the instance on a network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Neutron port UUID (optional; `vif_id` in network_data.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub network_id: String,
    pub mac: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// A tagged device, with the fields Nova's `devices` entries carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    pub bus: String,
    #[serde(default = "none_string")]
    pub address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf_trusted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

fn none_string() -> String {
    "none".to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Nic,
    Disk,
    Share,
}

/// Buses Nova renders; a device on another bus is omitted, as Nova does.
pub const KNOWN_BUSES: &[&str] = &["pci", "usb", "scsi", "ide", "xen", "none"];

/// Why a record was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidInstance {
    /// A required text field is empty.
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    /// An identifier is too long or holds characters that cannot be an id.
    #[error("field `{field}` must be 1-{MAX_ID_LEN} printable ASCII characters without spaces or '/', got {value:?}")]
    BadId { field: &'static str, value: String },
    /// User data over the limit.
    #[error("user_data is {0} bytes; the limit is {MAX_USER_DATA_BYTES} bytes")]
    UserDataTooLarge(usize),
    /// Too many ports.
    #[error("an instance may have at most {MAX_PORTS} ports, got {0}")]
    TooManyPorts(usize),
    /// A MAC that is not six colon-separated hex octets.
    #[error("port mac {0:?} is not a MAC address like fa:16:3e:12:34:56")]
    BadMac(String),
    /// network_data that is not a JSON object.
    #[error("network_data must be a JSON object (a network_data.json document)")]
    BadNetworkData,
}

impl Instance {
    /// Check what the renderer and the store rely on. Called on every write.
    pub fn validate(&self) -> Result<(), InvalidInstance> {
        check_id("uuid", &self.uuid)?;
        check_id("project_id", &self.project_id)?;
        if self.hostname.trim().is_empty() {
            return Err(InvalidInstance::Empty("hostname"));
        }
        if let Some(data) = &self.user_data {
            if data.len() > MAX_USER_DATA_BYTES {
                return Err(InvalidInstance::UserDataTooLarge(data.len()));
            }
        }
        if self.ports.len() > MAX_PORTS {
            return Err(InvalidInstance::TooManyPorts(self.ports.len()));
        }
        for port in &self.ports {
            check_id("ports[].network_id", &port.network_id)?;
            if parse_mac(&port.mac).is_none() {
                return Err(InvalidInstance::BadMac(port.mac.clone()));
            }
        }
        if let Some(doc) = &self.network_data {
            if !doc.is_object() {
                return Err(InvalidInstance::BadNetworkData);
            }
        }
        Ok(())
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), InvalidInstance> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(InvalidInstance::BadId {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

mod base64_opt {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map(|bytes| Some(Bytes::from(bytes)))
                .map_err(|e| {
                    serde::de::Error::custom(format!("user_data is not valid base64: {e}"))
                }),
        }
    }
}

/// The user data as Nova stores it (base64 text), for dynamic vendordata.
pub fn user_data_base64(instance: &Instance) -> Option<String> {
    instance
        .user_data
        .as_ref()
        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_as_base64() {
        let json = serde_json::json!({
            "uuid": "u1", "name": "n", "hostname": "h", "project_id": "p",
            "user_data": "I2Nsb3VkLWNvbmZpZwo="
        });
        let instance: Instance = serde_json::from_value(json).unwrap();
        assert_eq!(instance.user_data.as_deref(), Some(&b"#cloud-config\n"[..]));
        let back = serde_json::to_value(&instance).unwrap();
        assert_eq!(back["user_data"], "I2Nsb3VkLWNvbmZpZwo=");
    }

    #[test]
    fn bad_records_are_refused_with_reasons() {
        let mut instance: Instance = serde_json::from_value(serde_json::json!({
            "uuid": "u1", "name": "n", "hostname": "h", "project_id": "p"
        }))
        .unwrap();
        assert!(instance.validate().is_ok());
        instance.uuid = "a/b".into();
        assert!(matches!(
            instance.validate(),
            Err(InvalidInstance::BadId { .. })
        ));
        instance.uuid = "u1".into();
        instance.user_data = Some(vec![0; MAX_USER_DATA_BYTES + 1].into());
        assert_eq!(
            instance.validate(),
            Err(InvalidInstance::UserDataTooLarge(MAX_USER_DATA_BYTES + 1))
        );
        let unknown = serde_json::from_value::<Instance>(serde_json::json!({
            "uuid": "u1", "name": "n", "hostname": "h", "project_id": "p", "colour": "red"
        }));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `colour`"));
    }
}
