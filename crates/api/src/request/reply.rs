//! What a path of a caller's loaded instance answers: a body from its
//! tree, a response of its own (session tokens, the instance identity
//! document, NoCloud), or what it must wait for (the vendordata call, the
//! password store).

use super::outcome::{Outcome, Ready};
use super::today_utc;
use crate::cache::LoadedInstance;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::metadata::MetadataService;
use crate::metrics::IdentityLabel;
use meta169_http::request_head::RequestHead;
use meta169_tree::versions::{ec2_version_listing, openstack_version_listing};
use meta169_tree::{Body, ContentType, MetadataPath};
use std::sync::Arc;

/// What a path of a loaded instance needs.
pub(super) enum Reply {
    /// Answered from memory.
    Now(Ready),
    /// `vendor_data2.json`, not built yet: the vendordata call.
    VendorData2(ContentType),
    /// `password`: read or written through the store.
    Password,
}

/// The answer for `path` of the caller's `loaded` instance, or what it
/// has to wait for.
pub(super) fn reply_for(
    service: &MetadataService,
    loaded: &Arc<LoadedInstance>,
    path: &MetadataPath<'_>,
    request: &RequestHead<'_>,
    caller: &Caller<'_>,
    outcome: &mut Outcome,
) -> Result<Reply, ApiError> {
    // The span is at debug level; finding it costs more than the check.
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::Span::current().record("instance", &*loaded.uuid);
    }
    if path.is_token_request() {
        let direct = matches!(outcome.identity, IdentityLabel::BySource);
        return crate::session_token::answer(service, loaded, request, direct)
            .map(|answer| Reply::Now(Ready::Response(answer)));
    }
    outcome.tokenless = crate::session_token::check(service, loaded, caller.session_token)?;
    let segments = match path {
        MetadataPath::Ec2Versions => {
            return Ok(Reply::Now(Ready::Body(
                ContentType::Text,
                ec2_version_listing().into(),
            )))
        }
        MetadataPath::OpenStackVersions => {
            return Ok(Reply::Now(Ready::Body(
                ContentType::Text,
                openstack_version_listing(&today_utc()).into(),
            )))
        }
        MetadataPath::Item(segments) => segments,
        MetadataPath::Root => unreachable!("answered before identification"),
    };
    // A signed request's X-Forwarded-For is read only if the path needs it.
    let guest = || caller.requester(request.headers);
    if let Some(answer) = crate::instance_identity::answer(loaded, segments, guest) {
        return answer.map(|answer| Reply::Now(Ready::Response(answer)));
    }
    if let Some(answer) = crate::nocloud::answer(service, loaded, segments) {
        return answer.map(|answer| Reply::Now(Ready::Response(answer)));
    }
    let entry = loaded
        .tree
        .lookup_joined(segments, segments.below_version())
        .ok_or_else(ApiError::not_found)?;
    // Moved out, not cloned: a clone and its drop are two atomic operations.
    let body = match entry.body {
        Body::Static(bytes) => bytes,
        Body::MetaData { before, after } => crate::random_seed::document(before, after),
        Body::RequesterAddress => guest().to_string().into(),
        Body::VendorData2 => match loaded.vendor_data2.get() {
            Some(doc) => doc.clone(),
            None => return Ok(Reply::VendorData2(entry.content_type)),
        },
        Body::Password => return Ok(Reply::Password),
    };
    Ok(Reply::Now(Ready::Body(entry.content_type, body)))
}
