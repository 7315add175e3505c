//! Links and addresses over rtnetlink, in the root namespace or inside a
//! named one (the netlink socket is opened by a thread inside it).

use crate::netns;
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

fn nl(e: rtnetlink::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// A netlink handle bound to one namespace (`None`: the agent's own).
#[derive(Clone)]
pub struct Net {
    handle: Handle,
}

/// What we need to know of a link.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    pub controller: Option<u32>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                link.mac = Some(mac);
            }
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            _ => {}
        }
    }
    link
}

impl Net {
    /// A handle in the agent's namespace.
    pub fn root() -> io::Result<Net> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Net { handle })
    }

    /// A handle inside namespace `name`.
    pub fn inside(name: &str) -> io::Result<Net> {
        let runtime = tokio::runtime::Handle::current();
        let handle = netns::run_in(name, move || {
            // The socket is created in this thread's namespace and keeps it.
            let _enter = runtime.enter();
            let (connection, handle, _) = rtnetlink::new_connection()?;
            runtime.spawn(connection);
            Ok(handle)
        })?;
        Ok(Net { handle })
    }

    pub async fn link(&self, name: &str) -> io::Result<Option<Link>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_of(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(nl(e)),
        }
    }

    pub async fn links(&self) -> io::Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl)?;
        Ok(msgs.iter().map(link_of).collect())
    }

    /// Create a veth pair `outer`/`inner` here and move `inner` into namespace `ns`.
    pub async fn add_veth_into(&self, outer: &str, inner: &str, ns: &str) -> io::Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(outer, inner).build())
            .execute()
            .await
            .map_err(nl)?;
        let peer = self
            .link(inner)
            .await?
            .ok_or_else(|| io::Error::other(format!("veth peer {inner} vanished")))?;
        let target = netns::open(ns)?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer.index)
                    .setns_by_fd(target.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl)
    }

    pub async fn delete_link(&self, index: u32) -> io::Result<()> {
        self.handle.link().del(index).execute().await.map_err(nl)
    }

    /// Set MAC (if given), MTU (if non-zero) and up.
    pub async fn configure(&self, index: u32, mac: Option<[u8; 6]>, mtu: u32) -> io::Result<()> {
        let mut builder = LinkUnspec::new_with_index(index).up();
        if let Some(mac) = mac {
            builder = builder.address(mac.to_vec());
        }
        if mtu > 0 {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(nl)
    }

    /// Attach to a Linux bridge.
    pub async fn set_controller(&self, index: u32, bridge: u32) -> io::Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).build())
            .execute()
            .await
            .map_err(nl)
    }

    /// Addresses (address, prefix length) of a link.
    pub async fn addresses(&self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl)?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Add an address; IPv6 without duplicate address detection, so a
    /// listener can bind at once (the address is ours by construction).
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let mut request = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(nl(e)),
        }
    }

    pub async fn delete_address(&self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
            .execute()
            .try_collect()
            .await
            .map_err(nl)?;
        for msg in msgs.into_iter().filter(|m| m.header.prefix_len == prefix) {
            self.handle.address().del(msg).execute().await.map_err(nl)?;
        }
        Ok(())
    }
}

/// Turn off transmit checksum offload on `name` in the calling thread's
/// namespace (what `ethtool -K NAME tx off` does). Needed where the
/// integration bridge uses the userspace (netdev) datapath, which does not
/// fill in checksums the kernel left to the device; Neutron adds an
/// iptables CHECKSUM rule for the same reason.
pub fn disable_tx_checksum(name: &str) -> io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!(
            "interface name {name} is too long"
        )));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    for (slot, byte) in request.name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: a datagram socket for the ioctl, closed below; the request
    // points at live, correctly laid out structures for SIOCETHTOOL.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = libc::ioctl(fd, SIOCETHTOOL as _, &mut request as *mut IfReq);
        let error = io::Error::last_os_error();
        libc::close(fd);
        if result < 0 {
            return Err(error);
        }
    }
    Ok(())
}
