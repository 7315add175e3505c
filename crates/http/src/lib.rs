//! What meta169's API and agent share on the wire, in one place: header
//! names ([`headers`]), guest addresses ([`address`]), MACs and EUI-64
//! ([`mac`]) and the proxy signature ([`signing`]); with the default
//! `server` feature also the bounded HTTP/1 listener for TCP and UNIX
//! sockets ([`listener`]) and its sockets ([`bind`], [`hop_limit`],
//! [`direct_socket`]), its quick path for plain GET requests ([`quick`],
//! reading heads as [`request_head`]), bounded body reads ([`body`]) and CA bundles
//! ([`ca`]), and the operations listener ([`ops`]: metrics, health,
//! readiness). The pure crates (the tree, the store) use the first part only.

pub mod address;
pub mod headers;
pub mod mac;
pub mod signing;

#[cfg(feature = "server")]
pub mod access_log;
#[cfg(feature = "server")]
mod batch;
#[cfg(feature = "server")]
pub mod bind;
#[cfg(feature = "server")]
pub mod body;
#[cfg(feature = "server")]
pub mod ca;
#[cfg(feature = "server")]
pub mod direct_socket;
#[cfg(feature = "server")]
mod head_timeout;
#[cfg(feature = "server")]
pub mod hop_limit;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
pub mod log_throttle;
#[cfg(feature = "server")]
pub mod ops;
#[cfg(feature = "server")]
mod per_source;
#[cfg(feature = "server")]
pub mod quick;
#[cfg(feature = "server")]
pub mod request_head;
#[cfg(feature = "server")]
mod rewind;

#[cfg(feature = "server")]
pub use listener::{
    serve, serve_direct, Accept, Answer, Handled, Handler, PeerAddr, PeerHandler, ResponseBody,
    ServerLimits,
};
