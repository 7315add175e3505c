//! meta169's metadata API: the guest-facing HTTP server that identifies a
//! caller, loads its instance and serves a path of its rendered tree, in
//! Nova's paths, statuses and formats; plus the admin API orchestrators use
//! to register instances.

pub mod admin;
mod answer;
pub mod cache;
mod cache_feed;
pub mod error;
pub mod identity;
mod instance_identity;
pub mod metadata;
pub mod metrics;
pub mod neighbours;
pub mod nocloud;
pub mod password;
mod random_seed;
pub mod request;
mod session_token;
pub mod settings;
pub mod token;
mod under_way;
pub mod vendordata;

use std::sync::Arc;

pub use meta169_http::access_log::AccessLog;
pub use metadata::MetadataService;
pub use settings::{ApiSettings, DynamicTarget, IdentitySettings, ServerLimits};

pub use meta169_http::{self as server, signing, PeerAddr};

/// The metadata listener's limits for these settings: `limits`, with the
/// answers to pipelined requests written together when every caller is a
/// proxy (guests are not identified by their own address), as meta169's
/// agent is. Where guests call directly, every malformed request gets its
/// status line instead. Trusted proxies have no per-source connection limit.
pub fn metadata_listener_limits(settings: &ApiSettings, limits: ServerLimits) -> ServerLimits {
    ServerLimits {
        batch_pipelined_answers: !settings.identity.by_peer(),
        // A proxy's connections carry many guests.
        unlimited_sources: settings.identity.trusted_proxies.clone(),
        ..limits
    }
}

/// The guest-facing handler (for [`server::serve_direct`]): every path
/// goes to the metadata handler.
pub fn metadata_handler(service: Arc<MetadataService>) -> request::MetadataHandler {
    request::MetadataHandler(service)
}
