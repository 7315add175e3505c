//! The guest-facing request path: every request, whatever its path, is
//! identified, answered from the caller's tree and counted. Mirrors
//! Nova's handler: `/` needs no identity, any method but on `password` is
//! served as GET, absent data is a fast 404. Requests come from hyper
//! ([`handle`]) or from the listener's quick path ([`PeerHandler::handle_head`]),
//! and are read the same way ([`RequestHead`]). What a path of the
//! caller's instance answers is in `request/reply.rs`; how a request ends
//! (its response, metrics and access log line) in `request/outcome.rs`.

use crate::answer::plain;
use crate::error::ApiError;
use crate::identity::{identify_with, Caller, Identity};
use crate::metadata::MetadataService;
use crate::metrics::IdentityLabel;
use bytes::Bytes;
use futures_util::future::Either;
use hyper::body::Incoming;
use meta169_http::quick::{Head, PlainAnswer, Quick};
use meta169_http::request_head::RequestHead;
use meta169_http::Answer;
use meta169_http::{Handled, PeerHandler};
use meta169_tree::versions::ec2_version_listing;
use meta169_tree::{ContentType, MetadataPath};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

mod outcome;
mod reply;

use outcome::{finish, settle, Outcome, Ready};
use reply::{reply_for, Reply};

/// `YYYY-MM-DD` of now, UTC, for hiding future versions.
pub fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Percent-decode the request path (without copying when there is
/// nothing to decode); refuse what cannot be a metadata path.
fn decode_path(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    if raw.len() > 3 * meta169_tree::path::MAX_PATH_LEN {
        return Err(ApiError::BadRequest("The request path is too long.".into()));
    }
    if !meta169_tree::path::has_escapes(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("The request path is not valid UTF-8.".into()))
}

fn parse_path(decoded: &str) -> Result<MetadataPath<'_>, ApiError> {
    MetadataPath::parse(decoded)
        .map_err(|e| ApiError::BadRequest(format!("Bad request path: {e}.")))
}

/// The metadata side as a listener's handler: every request, whatever its
/// path, goes to [`handle`] (no router: there is nothing to route).
#[derive(Clone)]
pub struct MetadataHandler(pub Arc<MetadataService>);

impl PeerHandler for MetadataHandler {
    fn handle(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Answer> + Send + 'static + use<> {
        match handle(&self.0, request, peer) {
            Handled::Now(answer) => Either::Left(std::future::ready(answer)),
            Handled::Later(handling) => Either::Right(handling),
        }
    }

    fn handle_now(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Handled<impl std::future::Future<Output = Answer> + Send + 'static + use<>> {
        handle(&self.0, request, peer)
    }

    const QUICK: bool = true;

    /// A plain GET: a cached answer goes out with its fixed headers
    /// rendered once ([`crate::answer::header_lines`]); the rest as from
    /// hyper, by [`later`].
    fn handle_head(
        &self,
        head: &Head<'_>,
        peer: SocketAddr,
    ) -> Option<Quick<impl std::future::Future<Output = Answer> + Send + 'static + use<>>> {
        let started = Instant::now();
        let view = head.view();
        if !tracing::enabled!(tracing::Level::DEBUG) {
            let mut outcome = Outcome::default();
            if let Some(result) = cached(&self.0, &view, peer.ip(), started, &mut outcome) {
                return Some(
                    match settle(&self.0, view.path, result, started, &outcome) {
                        Ready::Body(content_type, body) => Quick::Plain(PlainAnswer {
                            header_lines: crate::answer::header_lines(content_type),
                            body,
                        }),
                        Ready::Response(answer) => Quick::Now(answer),
                    },
                );
            }
        }
        Some(Quick::Later(later(
            &self.0,
            head.to_parts()?,
            None,
            peer,
            started,
        )))
    }
}

/// The metadata handler: every path goes through here.
///
/// Most requests are answered from the caches without waiting for
/// anything ([`serve_cached`]): [`Handled::Now`], with no future, span or
/// allocation, since hyper moves each request's future a few times and
/// its size showed in the profile. The rest (cache misses, passwords, the
/// first vendordata call) and every request while debug logging is on
/// take the async way ([`later`]).
pub fn handle(
    service: &Arc<MetadataService>,
    request: http::Request<Incoming>,
    peer: SocketAddr,
) -> Handled<impl std::future::Future<Output = Answer> + Send + 'static + use<>> {
    let started = Instant::now();
    // The head stays here, borrowed by the request's handling and read
    // again for its metrics and log line; only the body moves on.
    let (parts, body) = request.into_parts();
    if !tracing::enabled!(tracing::Level::DEBUG) {
        let mut outcome = Outcome::default();
        let head = RequestHead::of(&parts);
        if let Some(result) = cached(service, &head, peer.ip(), started, &mut outcome) {
            let answer = finish(service, head.path, result, started, &outcome);
            crate::answer::recycle(parts.headers);
            return Handled::Now(answer);
        }
    }
    Handled::Later(later(service, parts, Some(body), peer, started))
}

/// A request the caches cannot answer at once, or any while debug
/// logging is on: boxed, in a span ([`serve`]).
///
/// The per-request span is at debug level: an enabled span costs more than
/// the rest of a cached request. Error events carry path and instance
/// themselves, so logs at info level lose nothing.
fn later(
    service: &Arc<MetadataService>,
    parts: http::request::Parts,
    body: Option<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>> {
    let span = tracing::debug_span!("metadata", path = %parts.uri.path(), method = %parts.method, instance = tracing::field::Empty);
    let service = service.clone();
    Box::pin(
        async move {
            let mut outcome = Outcome::default();
            let result = serve(&service, &parts, body, peer.ip(), started, &mut outcome).await;
            finish(
                &service,
                parts.uri.path(),
                result.map(Ready::Response),
                started,
                &outcome,
            )
        }
        .instrument(span),
    )
}

/// [`serve_cached`]'s answer, or `None` when the request takes the async
/// way.
fn cached(
    service: &MetadataService,
    request: &RequestHead<'_>,
    peer: IpAddr,
    started: Instant,
    outcome: &mut Outcome,
) -> Option<Result<Ready, ApiError>> {
    match serve_cached(service, request, peer, started, outcome) {
        Ok(None) => None,
        Ok(Some(ready)) => Some(Ok(ready)),
        Err(error) => Some(Err(error)),
    }
}

/// A request answered from the caches without waiting: `Ok(None)` when
/// it needs the store, the vendordata service or a password write, and
/// goes the async way ([`serve`]) from the start. What it finds is
/// counted from its `outcome` once answered, so the async way may do it
/// again.
fn serve_cached(
    service: &MetadataService,
    request: &RequestHead<'_>,
    peer: IpAddr,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Option<Ready>, ApiError> {
    let decoded = decode_path(request.path)?;
    let path = parse_path(&decoded)?;
    if path == MetadataPath::Root {
        return Ok(Some(Ready::Body(
            ContentType::Text,
            ec2_version_listing().into(),
        )));
    }
    // A signed caller's instance, found while checking its signature.
    let mut signed = None;
    let caller = caller_of(service, request, peer, outcome, |id, signature| {
        service.signed(id, signature, started, &mut signed)
    })?;
    let Some(found) = service.resolve_cached(&caller, started, signed) else {
        return Ok(None);
    };
    let reply = found.and_then(|loaded| {
        let reply = reply_for(service, &loaded, &path, request, &caller, outcome);
        // Moved, not cloned: a reference count is two atomic operations.
        outcome.instance = Some(loaded);
        reply
    });
    match reply {
        Ok(Reply::VendorData2(_) | Reply::Password) => Ok(None),
        // Counted as the async way's `load` counts a hit.
        reply => {
            service.metrics.cache_hit();
            reply.map(|reply| match reply {
                Reply::Now(ready) => Some(ready),
                Reply::VendorData2(_) | Reply::Password => None,
            })
        }
    }
}

/// Any request, waiting for the store and services as needed.
async fn serve(
    service: &MetadataService,
    request: &http::request::Parts,
    body: Option<Incoming>,
    peer: IpAddr,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Answer, ApiError> {
    let head = RequestHead::of(request);
    let decoded = decode_path(head.path)?;
    let path = parse_path(&decoded)?;
    if path == MetadataPath::Root {
        return Ok(plain(ContentType::Text, ec2_version_listing()));
    }
    let caller = caller_of(service, &head, peer, outcome, |id, signature| {
        service.signatures.matches(id, signature)
    })?;
    let loaded = service.resolve(&caller, started).await?;
    let reply = reply_for(service, &loaded, &path, &head, &caller, outcome);
    outcome.instance = Some(loaded.clone());
    match reply? {
        Reply::Now(Ready::Body(content_type, body)) => Ok(plain(content_type, body)),
        Reply::Now(Ready::Response(answer)) => Ok(answer),
        Reply::VendorData2(content_type) => {
            let doc = loaded
                .vendor_data2
                .get_or_init(|| async {
                    match loaded.tree.instance() {
                        Some(instance) => service.vendor.document(&instance, &service.settings).await,
                        None => {
                            tracing::error!(instance = %loaded.uuid, "cached record unreadable; vendor_data2.json left empty");
                            Bytes::from_static(b"{}")
                        }
                    }
                })
                .await;
            Ok(plain(content_type, doc.clone()))
        }
        Reply::Password => crate::password::answer(service, &loaded, request, body).await,
    }
}

/// Who is calling (counted in `outcome`); `signed` checks a signature
/// ([`identify_with`]).
fn caller_of<'a>(
    service: &MetadataService,
    request: &RequestHead<'a>,
    peer: IpAddr,
    outcome: &mut Outcome,
    signed: impl FnOnce(&str, &[u8]) -> bool,
) -> Result<Caller<'a>, ApiError> {
    let caller = identify_with(request.headers, peer, &service.settings.identity, signed)?;
    outcome.identity = match caller.identity {
        Identity::Signed { .. } => IdentityLabel::Signed,
        Identity::ByAddress { .. } => IdentityLabel::ByAddress,
        Identity::BySource { .. } => IdentityLabel::BySource,
    };
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let today = today_utc();
        assert_eq!(today.len(), 10);
        assert!(today.as_str() > "2024-01-01");
    }

    #[test]
    fn paths_are_decoded_and_checked() {
        assert!(
            matches!(parse_path(&decode_path("/latest/meta%2Ddata").unwrap()), Ok(MetadataPath::Item(s)) if s[2] == "meta-data")
        );
        assert!(matches!(
            decode_path("/latest/meta-data"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(parse_path(&decode_path("/latest/%00").unwrap()).is_err());
        assert!(decode_path("/latest/%ff%fe").is_err());
        assert!(parse_path(&decode_path("/latest/%2e%2e/x").unwrap()).is_err());
        assert!(decode_path(&"/a".repeat(3000)).is_err());
    }
}
