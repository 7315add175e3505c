//! The rendered tree of one instance: what a path holds ([`Entry`],
//! [`Body`], [`ContentType`]) and the [`Tree`] of every EC2 and OpenStack
//! path of every version, rendered once per record change so serving is a
//! map lookup. The EC2 side is [`crate::ec2`], the OpenStack side
//! [`crate::openstack`].

use crate::ec2::{ec2_tree, flatten};
use crate::model::Instance;
use crate::openstack::openstack_entries;
use crate::versions::{self, ec2, os, EC2_VERSIONS, OPENSTACK_VERSIONS};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
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
    pub(crate) fn text(body: impl Into<Bytes>) -> Self {
        Entry {
            body: Body::Static(body.into()),
            content_type: ContentType::Text,
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

/// `<hostname>.<dhcp_domain>`, as Nova's `_get_hostname`.
pub fn full_hostname(instance: &Instance, options: &RenderOptions) -> String {
    if options.dhcp_domain.is_empty() {
        instance.hostname.clone()
    } else {
        format!("{}.{}", instance.hostname, options.dhcp_domain)
    }
}
