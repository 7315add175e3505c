//! Answers that must not travel past the first hop: a handler marks its
//! response with [`HopLimit`], and a listener that honours it
//! ([`crate::ServerLimits::honour_hop_limits`]) sets the connection's IP
//! TTL or IPv6 hop limit before the answer is written. A session token
//! sent with hop limit 1 reaches the guest on the link but dies at the
//! first router, such as a container bridge or proxy inside the guest
//! (AWS's `HttpPutResponseHopLimit`). The limit then stays on that
//! connection: its later packets go to the same client.

use std::net::SocketAddr;

/// The hop limit a response asks for (a response extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopLimit(pub u8);

/// A connection's socket, kept to set its hop limit.
pub struct HopControl {
    socket: socket2::Socket,
    ipv6: bool,
}

impl HopControl {
    /// A handle on `stream`'s socket (a duplicate descriptor), `peer` its
    /// peer; `None` if it cannot be duplicated.
    pub fn of(stream: &impl std::os::fd::AsFd, peer: SocketAddr) -> Option<HopControl> {
        let socket = socket2::SockRef::from(stream).try_clone().ok()?;
        // An IPv4 peer of a dual-stack socket is still an IPv6 socket, whose
        // IPv4 packets take their TTL from IP_TTL.
        let ipv6 = peer.is_ipv6()
            && !matches!(peer.ip(), std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        Some(HopControl { socket, ipv6 })
    }

    /// Set the connection's hop limit to `limit`.
    pub fn apply(&self, limit: HopLimit) {
        let hops = u32::from(limit.0);
        let set = match self.ipv6 {
            true => self.socket.set_unicast_hops_v6(hops),
            false => self.socket.set_ttl_v4(hops),
        };
        if let Err(e) = set {
            tracing::warn!("cannot set the hop limit of a connection to {hops}: {e}");
        }
    }
}
