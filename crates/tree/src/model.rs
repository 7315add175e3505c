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
/// Most `meta` items: Nova's default `metadata_items` quota.
pub const MAX_META_ITEMS: usize = 128;
/// Longest `meta` key and value, in characters, as Nova's API schema.
pub const MAX_META_TEXT: usize = 255;
/// Longest single-line value (names, EC2 fields, key names), in characters.
pub const MAX_FIELD_CHARS: usize = 255;
/// Most public keys, and the longest key text: far above any real key
/// (an RSA 16384-bit OpenSSH key is under 3 KiB).
pub const MAX_PUBLIC_KEYS: usize = 64;
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;
/// Most `block_device_mapping` entries.
pub const MAX_BLOCK_DEVICES: usize = 64;
/// Injected files per record, longest path and largest content: Nova's
/// defaults (`injected_files`, `injected_file_path_length`,
/// `injected_file_content_bytes`). A config drive's `--file` adds more.
pub const MAX_FILES: usize = 5;
pub const MAX_FILE_PATH_CHARS: usize = 255;
pub const MAX_FILE_BYTES: usize = 10 * 1024;
/// Longest host name (RFC 1123) and longest label in it.
pub const MAX_HOSTNAME_LEN: usize = 253;
pub const MAX_LABEL_LEN: usize = 63;

/// The project of a record that names none: standalone servers (identity
/// by address or source) have no projects. Signed requests must still
/// carry it as `X-Tenant-ID`, so records for OpenStack name their own.
pub const DEFAULT_PROJECT_ID: &str = "default";

fn default_project_id() -> String {
    DEFAULT_PROJECT_ID.to_string()
}

/// The record field that carries user data as plain text, for people
/// writing records by hand; stored as `user_data`.
pub const USER_DATA_TEXT: &str = "user_data_text";

/// Why a record's JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("give user_data (base64) or user_data_text (plain text), not both")]
    BothUserData,
    #[error("user_data_text must be a string")]
    UserDataTextNotText,
    #[error("a record is a JSON object")]
    NotAnObject,
}

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
    /// Optional for standalone servers: [`DEFAULT_PROJECT_ID`] when absent.
    #[serde(default = "default_project_id")]
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
    /// Whether this instance's requests must carry a session token
    /// (`PUT /latest/api/token`); default: the server's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_tokens: Option<TokenMode>,
    /// Injected files (Nova's "personality"): `files` with `content_path`
    /// in `meta_data.json`, the bytes at `/openstack/content/NNNN` and on
    /// config drives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InjectedFile>,
}

/// A file injected into the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedFile {
    /// Where the guest writes it: an absolute path.
    pub path: String,
    /// Its bytes, base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub content: Bytes,
}

/// Whether metadata requests must carry an IMDSv2-style session token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// Tokens are checked when sent; requests without one are served.
    #[default]
    Optional,
    /// A request without a valid token gets 401.
    Required,
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
    #[error("field `{field}` must be 1-{MAX_ID_LEN} printable ASCII characters without spaces or '/', and not '.' or '..', got {value:?}")]
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
    /// A host name that is not letters, digits and hyphens in dot-separated labels.
    #[error("hostname {0:?} is not a host name: letters, digits and '-' in labels of 1-{MAX_LABEL_LEN} characters separated by '.', at most {MAX_HOSTNAME_LEN} in all, no '_'")]
    BadHostname(String),
    /// A value served as one line of text holds a line break or other
    /// control character, or is too long.
    #[error("field `{field}` must be one line of at most {MAX_FIELD_CHARS} characters without control characters, got {value:?}")]
    BadText { field: String, value: String },
    /// A name that is also a path segment or list entry guests read.
    #[error("`{field}` name {value:?} must be 1-{MAX_FIELD_CHARS} characters: letters, digits, '-', '_', '.', '@' or spaces, and not '.' or '..'")]
    BadName { field: &'static str, value: String },
    /// Too many entries in a map or list.
    #[error("`{field}` may have at most {limit} entries, got {count}")]
    TooMany {
        field: &'static str,
        limit: usize,
        count: usize,
    },
    /// A `meta` key or value over Nova's limit.
    #[error("`meta` keys and values are limited to {MAX_META_TEXT} characters (as in Nova); {what} is {len}")]
    MetaTooLong { what: String, len: usize },
    /// A public key text over the limit.
    #[error("public key {name:?} is {len} bytes; the limit is {MAX_PUBLIC_KEY_BYTES}")]
    PublicKeyTooLarge { name: String, len: usize },
    /// An injected file's path the guest could not write safely.
    #[error("injected file path {0:?} must be absolute, at most {MAX_FILE_PATH_CHARS} characters, without control characters or '..' segments")]
    BadFilePath(String),
    /// An injected file over Nova's size limit.
    #[error("injected file {path:?} is {len} bytes; the limit is {MAX_FILE_BYTES} (Nova's injected_file_content_bytes)")]
    FileTooLarge { path: String, len: usize },
}

impl Instance {
    /// A record from its JSON, as the admin API, `instance add` and
    /// `configdrive --from-json` take it: `user_data_text` (plain text)
    /// stands for `user_data` (base64). Not yet validated.
    pub fn from_json(bytes: &[u8]) -> Result<Instance, RecordError> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let record = value.as_object_mut().ok_or(RecordError::NotAnObject)?;
        if let Some(text) = record.remove(USER_DATA_TEXT) {
            if record.contains_key("user_data") {
                return Err(RecordError::BothUserData);
            }
            let text = text.as_str().ok_or(RecordError::UserDataTextNotText)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            record.insert("user_data".into(), encoded.into());
        }
        Ok(serde_json::from_value(value)?)
    }

    /// Check what the renderer and the store rely on. Called on every write.
    pub fn validate(&self) -> Result<(), InvalidInstance> {
        check_id("uuid", &self.uuid)?;
        check_id("project_id", &self.project_id)?;
        if self.hostname.trim().is_empty() {
            return Err(InvalidInstance::Empty("hostname"));
        }
        check_hostname(&self.hostname)?;
        self.check_text_fields()?;
        self.check_maps()?;
        self.check_files()?;
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

impl Instance {
    /// Values served as a line of text (EC2 leaves, listings): a line
    /// break inside one would make guests read lines that are not there.
    fn check_text_fields(&self) -> Result<(), InvalidInstance> {
        let single = [
            ("name", Some(&self.name)),
            ("availability_zone", self.availability_zone.as_ref()),
            ("image_id", self.image_id.as_ref()),
            ("ami_id", self.ami_id.as_ref()),
            ("ec2_instance_id", self.ec2_instance_id.as_ref()),
            ("instance_type", self.instance_type.as_ref()),
            ("reservation_id", self.reservation_id.as_ref()),
            ("kernel_id", self.kernel_id.as_ref()),
            ("ramdisk_id", self.ramdisk_id.as_ref()),
            ("public_ipv4", self.public_ipv4.as_ref()),
            ("root_device_name", self.root_device_name.as_ref()),
        ];
        for (field, value) in single {
            if let Some(value) = value {
                check_line(field, value)?;
            }
        }
        for group in self.security_groups.iter().flatten() {
            check_line("security_groups[]", group)?;
        }
        for port in &self.ports {
            if let Some(id) = &port.id {
                check_id("ports[].id", id)?;
            }
        }
        Ok(())
    }

    /// Maps whose keys guests read as names (listings, path segments), and
    /// their bounds.
    fn check_files(&self) -> Result<(), InvalidInstance> {
        check_count("files", self.files.len(), MAX_FILES)?;
        for file in &self.files {
            check_file_path(&file.path)?;
            if file.content.len() > MAX_FILE_BYTES {
                return Err(InvalidInstance::FileTooLarge {
                    path: truncated(&file.path),
                    len: file.content.len(),
                });
            }
        }
        Ok(())
    }

    fn check_maps(&self) -> Result<(), InvalidInstance> {
        check_count("public_keys", self.public_keys.len(), MAX_PUBLIC_KEYS)?;
        for (name, key) in &self.public_keys {
            check_name("public_keys", name)?;
            if key.len() > MAX_PUBLIC_KEY_BYTES {
                return Err(InvalidInstance::PublicKeyTooLarge {
                    name: name.clone(),
                    len: key.len(),
                });
            }
        }
        check_count(
            "block_device_mapping",
            self.block_device_mapping.len(),
            MAX_BLOCK_DEVICES,
        )?;
        for (name, device) in &self.block_device_mapping {
            check_name("block_device_mapping", name)?;
            check_line(&format!("block_device_mapping.{name}"), device)?;
        }
        check_count("meta", self.meta.len(), MAX_META_ITEMS)?;
        for (key, value) in &self.meta {
            let key_len = key.chars().count();
            if key.is_empty() || key_len > MAX_META_TEXT {
                return Err(InvalidInstance::MetaTooLong {
                    what: format!("a key ({:?}...)", truncated(key)),
                    len: key_len,
                });
            }
            let value_len = value.chars().count();
            if value_len > MAX_META_TEXT {
                return Err(InvalidInstance::MetaTooLong {
                    what: format!("the value of {:?}", truncated(key)),
                    len: value_len,
                });
            }
        }
        Ok(())
    }
}

/// At most this many characters of a refused value go into the message.
const QUOTED_CHARS: usize = 80;

fn truncated(value: &str) -> String {
    value.chars().take(QUOTED_CHARS).collect()
}

fn check_count(field: &'static str, count: usize, limit: usize) -> Result<(), InvalidInstance> {
    if count > limit {
        return Err(InvalidInstance::TooMany {
            field,
            limit,
            count,
        });
    }
    Ok(())
}

/// One line of text: no control characters, bounded.
fn check_line(field: &str, value: &str) -> Result<(), InvalidInstance> {
    if value.chars().any(char::is_control) || value.chars().count() > MAX_FIELD_CHARS {
        return Err(InvalidInstance::BadText {
            field: field.to_string(),
            value: truncated(value),
        });
    }
    Ok(())
}

/// A key-pair or device name: what Nova accepts for key-pair names.
fn check_name(field: &'static str, value: &str) -> Result<(), InvalidInstance> {
    let ok = !value.is_empty()
        && value.chars().count() <= MAX_FIELD_CHARS
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ' '));
    if ok {
        Ok(())
    } else {
        Err(InvalidInstance::BadName {
            field,
            value: truncated(value),
        })
    }
}

/// An injected file's guest path: absolute, bounded, no control
/// characters, no `..` (cloud-init writes where it says).
pub fn check_file_path(path: &str) -> Result<(), InvalidInstance> {
    let ok = path.starts_with('/')
        && path.chars().count() <= MAX_FILE_PATH_CHARS
        && !path.chars().any(char::is_control)
        && !path.split('/').any(|segment| segment == "..");
    match ok {
        true => Ok(()),
        false => Err(InvalidInstance::BadFilePath(truncated(path))),
    }
}

/// RFC 1123 host name (a trailing dot allowed, as in a fully qualified name).
fn check_hostname(value: &str) -> Result<(), InvalidInstance> {
    let name = value.strip_suffix('.').unwrap_or(value);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN || !name.split('.').all(label_ok) {
        return Err(InvalidInstance::BadHostname(truncated(value)));
    }
    Ok(())
}

fn check_id(field: &'static str, value: &str) -> Result<(), InvalidInstance> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(InvalidInstance::BadId {
            field,
            value: truncated(value),
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

mod base64_bytes {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|e| serde::de::Error::custom(format!("file content is not valid base64: {e}")))
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

    fn record() -> Instance {
        serde_json::from_value(serde_json::json!({
            "uuid": "u1", "name": "n", "hostname": "h", "project_id": "p"
        }))
        .unwrap()
    }

    /// Each change is refused, and the message names the field.
    fn refused(change: impl FnOnce(&mut Instance), mentions: &str) {
        let mut instance = record();
        change(&mut instance);
        let message = instance
            .validate()
            .expect_err("accepted a bad record")
            .to_string();
        assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
    }

    #[test]
    fn values_that_would_corrupt_what_guests_read_are_refused() {
        refused(
            |i| {
                drop(
                    i.public_keys
                        .insert("k1\n1=evil".into(), "ssh-ed25519 AAAA".into()),
                )
            },
            "public_keys",
        );
        refused(
            |i| drop(i.public_keys.insert("..".into(), "k".into())),
            "public_keys",
        );
        refused(
            |i| {
                drop(
                    i.public_keys
                        .insert("k".into(), "a".repeat(MAX_PUBLIC_KEY_BYTES + 1)),
                )
            },
            "limit is 16384",
        );
        for key in ["eph\nemeral0", "..", "", "a/b"] {
            refused(
                |i| drop(i.block_device_mapping.insert(key.into(), "sdb".into())),
                "block_device_mapping",
            );
        }
        refused(
            |i| {
                drop(
                    i.block_device_mapping
                        .insert("swap".into(), "sdc\nx".into()),
                )
            },
            "block_device_mapping.swap",
        );
        refused(|i| i.hostname = "h\nx".into(), "hostname");
        refused(|i| i.hostname = "../../etc/passwd".into(), "hostname");
        refused(|i| i.hostname = "a".repeat(100_000), "hostname");
        refused(|i| i.hostname = "under_score".into(), "no '_'");
        refused(
            |i| i.hostname = format!("{}.example", "a".repeat(64)),
            "hostname",
        );
        refused(|i| i.hostname = "-lead".into(), "hostname");
        refused(
            |i| i.ec2_instance_id = Some("i-1\ni-2".into()),
            "ec2_instance_id",
        );
        refused(
            |i| i.security_groups = Some(vec!["default\nevil".into()]),
            "security_groups",
        );
        refused(|i| i.name = "x".repeat(MAX_FIELD_CHARS + 1), "name");
        refused(|i| i.uuid = "..".into(), "uuid");
        refused(
            |i| {
                i.ports.push(Port {
                    id: None,
                    network_id: "n".into(),
                    mac: "+a:16:3e:00:00:01".into(),
                    ips: vec![],
                })
            },
            "mac",
        );
    }

    #[test]
    fn meta_is_bounded_as_in_nova() {
        refused(
            |i| {
                for n in 0..10_000 {
                    i.meta.insert(format!("k{n}"), "v".into());
                }
            },
            "at most 128 entries, got 10000",
        );
        refused(
            |i| drop(i.meta.insert("k".into(), "v".repeat(3_500_000))),
            "value of \"k\" is 3500000",
        );
        refused(
            |i| drop(i.meta.insert("k".repeat(256), "v".into())),
            "a key",
        );
        let mut fine = record();
        for n in 0..MAX_META_ITEMS {
            fine.meta.insert(format!("k{n}"), "v".repeat(MAX_META_TEXT));
        }
        fine.hostname = "web-01.example.org".into();
        fine.public_keys
            .insert("mykey@laptop".into(), "ssh-ed25519 AAAA".into());
        fine.block_device_mapping
            .insert("ephemeral0".into(), "vdb".into());
        assert_eq!(fine.validate(), Ok(()));
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
