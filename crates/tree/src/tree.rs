//! The tree of one instance: what a path holds ([`Entry`], [`Body`],
//! [`ContentType`]) and the [`Tree`] of every EC2 and OpenStack path of
//! every version, each version rendered once on first use so serving is a
//! lookup. The EC2 side is [`crate::ec2`], the OpenStack side
//! [`crate::openstack`].

use crate::ec2::{ec2_tree, flatten};
use crate::model::Instance;
use crate::openstack::openstack_entries;
use crate::packed::Packed;
use crate::versions::{self, EC2_VERSIONS, OPENSTACK_VERSIONS};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

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

/// How an entry's body is produced. `H` holds `meta_data.json`'s halves:
/// owned where an entry is rendered, borrowed from the tree where a
/// lookup finds it ([`Found`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Body<H = Bytes> {
    /// Fixed bytes.
    Static(Bytes),
    /// `meta_data.json`: Nova regenerates `random_seed` on every request, so
    /// the document is kept in two halves and a fresh seed goes between.
    MetaData { before: H, after: H },
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
    pub const fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text/plain; charset=UTF-8",
            ContentType::Json => "application/json",
        }
    }
}

/// Where injected files are served: `/openstack/content/NNNN`.
pub const CONTENT: &str = "content";
/// Digits of an injected file's name under [`CONTENT`] (Nova's `%04d`).
const CONTENT_NAME_DIGITS: usize = 4;

/// One servable path.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<H = Bytes> {
    pub body: Body<H>,
    pub content_type: ContentType,
}

/// An entry as a lookup finds it, `meta_data.json`'s halves borrowed from
/// the tree: the document is copied out of them, and two clones of a
/// shared `Bytes` cost four atomic operations on every such request.
pub type Found<'a> = Entry<&'a [u8]>;

impl<H> Entry<H> {
    pub(crate) fn text(body: impl Into<Bytes>) -> Self {
        Entry {
            body: Body::Static(body.into()),
            content_type: ContentType::Text,
        }
    }
}

/// The tree of one instance. Versions are rendered when first asked for
/// and kept packed ([`Packed`]): a guest reads one or two of the nineteen,
/// so a cache of many instances holds only those.
#[derive(Debug)]
pub struct Tree {
    source: Source,
    options: Arc<RenderOptions>,
    // Boxed: an empty slot is a pointer, not a whole `Packed`.
    ec2: [OnceLock<Box<Packed>>; EC2_VERSIONS.len()],
    openstack: [OnceLock<Box<Packed>>; OPENSTACK_VERSIONS.len()],
}

/// What a tree renders from.
#[derive(Debug)]
enum Source {
    /// The parsed record (tools, tests, one-off renders).
    Parsed(Arc<Instance>),
    /// The record as compact JSON without its user data, parsed again when
    /// a version is first rendered: for a cache of many instances, a parsed
    /// record (every string and map a separate allocation) costs several
    /// times its text. The user data is kept apart, already decoded, and
    /// shared with the entries that serve it.
    Compact {
        record: Bytes,
        user_data: Option<Bytes>,
    },
}

impl Tree {
    /// A tree that renders each version on first use from `instance`.
    pub fn new(instance: Arc<Instance>, options: Arc<RenderOptions>) -> Tree {
        Self::with_source(Source::Parsed(instance), options)
    }

    /// As [`Tree::new`], keeping the record compact until a version is
    /// rendered (what a cache of many instances wants).
    pub fn compact(mut instance: Instance, options: Arc<RenderOptions>) -> Tree {
        let user_data = instance.user_data.take();
        let source = match serde_json::to_vec(&instance) {
            Ok(mut record) => {
                // The writer's spare capacity would stay allocated.
                record.shrink_to_fit();
                Source::Compact {
                    record: Bytes::from(record),
                    user_data,
                }
            }
            // An Instance always serializes; keep it parsed if not.
            Err(_) => {
                instance.user_data = user_data;
                Source::Parsed(Arc::new(instance))
            }
        };
        Self::with_source(source, options)
    }

    fn with_source(source: Source, options: Arc<RenderOptions>) -> Tree {
        Tree {
            source,
            options,
            ec2: std::array::from_fn(|_| OnceLock::new()),
            openstack: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Every version rendered now (tools and tests).
    pub fn render(instance: &Instance, options: &RenderOptions) -> Tree {
        let tree = Tree::new(Arc::new(instance.clone()), Arc::new(options.clone()));
        for index in 0..EC2_VERSIONS.len() {
            tree.ec2_version(index);
        }
        for index in 0..OPENSTACK_VERSIONS.len() {
            tree.openstack_version(index);
        }
        tree
    }

    /// The record the tree renders from (parsed again for a compact tree;
    /// `None` only if a compact record no longer parses, which cannot
    /// happen to text this type wrote).
    pub fn instance(&self) -> Option<Arc<Instance>> {
        match &self.source {
            Source::Parsed(instance) => Some(instance.clone()),
            Source::Compact { record, user_data } => {
                let mut instance: Instance = serde_json::from_slice(record).ok()?;
                instance.user_data = user_data.clone();
                Some(Arc::new(instance))
            }
        }
    }

    /// Heap bytes of the record this tree keeps (compact text and user
    /// data, or nothing extra for a shared parsed record).
    pub fn source_bytes(&self) -> usize {
        match &self.source {
            Source::Parsed(_) => 0,
            Source::Compact { record, user_data } => {
                record.len() + user_data.as_ref().map_or(0, Bytes::len)
            }
        }
    }

    /// A version's entries rendered by `render`, or none if the record is
    /// unreadable.
    fn rendered(&self, render: impl FnOnce(&Instance) -> Vec<(String, Entry)>) -> Box<Packed> {
        let entries = self
            .instance()
            .map(|instance| render(&instance))
            .unwrap_or_default();
        Box::new(Packed::new(entries))
    }

    fn ec2_version(&self, index: usize) -> &Packed {
        self.ec2[index].get_or_init(|| {
            self.rendered(|instance| {
                let top = ec2_tree(instance, &self.options, index);
                let mut entries = Vec::with_capacity(48);
                flatten("", &top, &mut entries);
                entries
            })
        })
    }

    fn openstack_version(&self, index: usize) -> &Packed {
        self.openstack[index].get_or_init(|| {
            self.rendered(|instance| openstack_entries(instance, &self.options, index))
        })
    }

    /// Look up normalised segments (`["ec2", "latest", "meta-data"]`);
    /// `latest` resolves to the newest version of its tree.
    pub fn lookup(&self, segments: &[&str]) -> Option<Found<'_>> {
        self.lookup_joined(segments, None)
    }

    /// [`Self::lookup`], given the segments below the version already
    /// joined by `/` when the request path has them so
    /// ([`crate::path::Segments::below_version`]): one key, not joined
    /// again.
    pub fn lookup_joined(
        &self,
        segments: &[&str],
        below_version: Option<&str>,
    ) -> Option<Found<'_>> {
        let (root, version) = (segments.first()?, segments.get(1)?);
        let packed = match *root {
            "ec2" => self.ec2_version(versions::ec2_index(version)?),
            "openstack" if *version == CONTENT => return self.content(&segments[2..]),
            "openstack" => self.openstack_version(versions::openstack_index(version)?),
            _ => return None,
        };
        match below_version {
            Some(key) => packed.get(key),
            None => packed.get_path(&segments[2..]),
        }
    }

    /// `/openstack/content/NNNN`: an injected file's bytes, as the
    /// `content_path` of its entry in `meta_data.json` says. Rare (once
    /// per boot), so read from the record each time.
    fn content(&self, rest: &[&str]) -> Option<Found<'_>> {
        let [name] = rest else { return None };
        if name.len() != CONTENT_NAME_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index: usize = name.parse().ok()?;
        let file = self.instance()?.files.get(index)?.content.clone();
        Some(Entry::text(file))
    }

    /// Every path in the tree, each version rendered (tools and tests).
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (index, version) in EC2_VERSIONS.iter().enumerate() {
            let mut keys: Vec<&str> = self.ec2_version(index).keys().collect();
            keys.sort_unstable();
            out.extend(keys.into_iter().map(|key| join("ec2", version, key)));
        }
        for (index, version) in OPENSTACK_VERSIONS.iter().enumerate() {
            let mut keys: Vec<&str> = self.openstack_version(index).keys().collect();
            keys.sort_unstable();
            out.extend(keys.into_iter().map(|key| join("openstack", version, key)));
        }
        out
    }

    /// Heap bytes of the versions rendered so far.
    pub fn rendered_bytes(&self) -> usize {
        self.ec2
            .iter()
            .chain(self.openstack.iter())
            .filter_map(OnceLock::get)
            .map(|packed| packed.heap_bytes())
            .sum()
    }
}

fn join(root: &str, version: &str, key: &str) -> String {
    if key.is_empty() {
        format!("{root}/{version}")
    } else {
        format!("{root}/{version}/{key}")
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
