//! The instance model and the metadata trees meta169 serves: one record in,
//! every EC2 and OpenStack path of every version out, in Nova's conventions.
//! Pure: no I/O, no HTTP; the API serves the tree and the config-drive
//! writer writes it, so the two never disagree.

pub mod ec2;
mod json;
pub mod model;
pub mod nocloud;
pub mod openstack;
mod packed;
pub mod path;
pub mod tree;
pub mod versions;

pub use ec2::Ec2Node;
pub use json::to_python_json;
pub use model::{
    Device, DeviceKind, Instance, InvalidInstance, Port, RecordError, TokenMode, DEFAULT_PROJECT_ID,
};
pub use openstack::DriveExtras;
pub use path::{MetadataPath, PathError, Segments};
pub use tree::{full_hostname, Body, ContentType, Entry, Found, RenderOptions, Tree};

/// The example record shipped in `docs/instance.example.json`: the demo
/// instance, and the reference for the record format.
pub const EXAMPLE_INSTANCE_JSON: &str = include_str!("../../../docs/instance.example.json");

/// The example record, parsed.
pub fn example_instance() -> Instance {
    serde_json::from_str(EXAMPLE_INSTANCE_JSON).expect("the shipped example record is valid")
}

#[cfg(test)]
mod tests;
