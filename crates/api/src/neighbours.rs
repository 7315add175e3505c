//! The kernel's neighbour table (ARP and NDP), read over netlink: the MAC
//! of a directly attached peer, for identity by MAC on flat networks where
//! guests take any address by DHCP. Read on every lookup, never cached: a
//! MAC may move to another address, or an address to another MAC, at any
//! time, and a stale answer would hand one guest another's data.

use futures_util::StreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use std::net::IpAddr;

/// Length of an Ethernet MAC.
const MAC_BYTES: usize = 6;

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[from] std::io::Error),
    #[error("reading the neighbour table: {0}")]
    Read(#[from] rtnetlink::Error),
}

/// A netlink handle on this network namespace's neighbour table.
pub struct Neighbours {
    handle: rtnetlink::Handle,
}

impl Neighbours {
    /// Open the netlink connection (needs a Tokio runtime).
    pub fn open() -> Result<Neighbours, NeighbourError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Neighbours { handle })
    }

    /// The MAC the kernel has for `ip` (a usable entry: not failed or
    /// incomplete), `None` when it has none.
    pub async fn mac_of(&self, ip: IpAddr) -> Result<Option<[u8; MAC_BYTES]>, NeighbourError> {
        let family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let mut entries = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(entry) = entries.next().await {
            if let Some(mac) = mac_if_for(&entry?, ip) {
                return Ok(Some(mac));
            }
        }
        Ok(None)
    }
}

/// The entry's MAC, if the entry is for `ip` and usable.
fn mac_if_for(entry: &NeighbourMessage, ip: IpAddr) -> Option<[u8; MAC_BYTES]> {
    if matches!(
        entry.header.state,
        NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::Noarp
    ) {
        return None;
    }
    let mut destination = None;
    let mut mac = None;
    for attribute in &entry.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                destination = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                destination = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; MAC_BYTES]>::try_from(bytes.as_slice()).ok()
            }
            _ => {}
        }
    }
    (destination == Some(ip)).then_some(mac).flatten()
}
