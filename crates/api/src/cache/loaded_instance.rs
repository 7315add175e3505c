//! One instance as the cache keeps it: its compact tree and what its
//! requests need besides (password, session-token mode, the proxy
//! signature, `vendor_data2.json` once built), with its estimated weight.

use crate::under_way::RefreshClaim;
use bytes::Bytes;
use meta169_http::signing::{same_signature, Signature, SignatureMemo};
use meta169_tree::{Instance, RenderOptions, Tree};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What a loaded instance is estimated to cost besides its user data and
/// record: the record parsed, one EC2 and one OpenStack version rendered,
/// and the cache's own bookkeeping (measured by `meta169 bench`).
const INSTANCE_OVERHEAD_BYTES: usize = 4096;

/// One instance with its tree (which keeps the record, compact).
#[derive(Debug)]
pub struct LoadedInstance {
    pub uuid: Box<str>,
    pub project_id: Box<str>,
    pub tree: Tree,
    pub password: String,
    pub revision: i64,
    /// The record's `metadata_tokens`.
    pub tokens: Option<meta169_tree::TokenMode>,
    loaded_at: Instant,
    weight: usize,
    /// `vendor_data2.json`, built on first request (it calls the dynamic targets).
    pub vendor_data2: tokio::sync::OnceCell<Bytes>,
    /// The proxy signature its signed requests carry, computed on the
    /// first: checked here, a signed request finds its instance and its
    /// signature in one cache lookup.
    signature: OnceLock<Signature>,
    /// Set while one request reloads this entry once it has expired.
    refreshing: Arc<AtomicBool>,
}

impl LoadedInstance {
    pub fn new(
        instance: Instance,
        options: Arc<RenderOptions>,
        password: String,
        revision: i64,
    ) -> Self {
        let (uuid, project_id) = (
            instance.uuid.as_str().into(),
            instance.project_id.as_str().into(),
        );
        let tokens = instance.metadata_tokens;
        let tree = Tree::compact(instance, options);
        LoadedInstance {
            weight: INSTANCE_OVERHEAD_BYTES + tree.source_bytes() + password.len(),
            uuid,
            project_id,
            tree,
            password,
            revision,
            tokens,
            loaded_at: Instant::now(),
            vendor_data2: tokio::sync::OnceCell::new(),
            signature: OnceLock::new(),
            refreshing: Arc::default(),
        }
    }

    /// The right to reload this (expired) entry, unless another request
    /// holds it.
    pub fn claim_refresh(&self) -> Option<RefreshClaim> {
        RefreshClaim::take(&self.refreshing)
    }

    /// Whether `signature` is this instance's proxy signature under the
    /// memo's secret.
    pub fn signature_matches(&self, signatures: &SignatureMemo, signature: &[u8]) -> bool {
        let expected = self
            .signature
            .get_or_init(|| signatures.expected(&self.uuid));
        same_signature(expected, signature)
    }

    /// The estimated bytes this entry holds.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// When it was read from the store.
    pub(super) fn loaded_at(&self) -> Instant {
        self.loaded_at
    }
}
