//! Who holds a listening port inside a namespace: when 169.254.169.254:80
//! is taken (most often by a haproxy that neutron-ovn-metadata-agent left
//! behind), the agent's log names the process, so the operator knows what
//! to stop. Read from `/proc/net/tcp{,6}` seen from inside the namespace,
//! and the sockets of `/proc/<pid>/fd`; no crate reads these two together.

use crate::netns;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// A process holding a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

/// The address of a `/proc/net/tcp` field (`0100007F:0050`): the kernel
/// prints each 32-bit word of the address in the machine's byte order.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inode of the socket listening on `address` in a `/proc/net/tcp` text.
fn listening_inode(table: &str, address: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = parse_address(fields.get(1)?)?;
        let same = local.port() == address.port()
            && (local.ip() == address.ip() || local.ip().is_unspecified());
        (same && *fields.get(3)? == TCP_LISTEN)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// The process with a file descriptor on socket `inode`, if this process
/// may look (another user's needs CAP_SYS_PTRACE).
fn process_of(inode: u64) -> Option<Holder> {
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
        });
        if holds {
            let command = std::fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            return Some(Holder { pid, command });
        }
    }
    None
}

/// Who listens on `address` in namespace `ns`, if it can be found out.
/// Blocking: call it off the runtime's thread.
pub fn holder(ns: &str, address: SocketAddr) -> Option<Holder> {
    let table = if address.is_ipv4() { "tcp" } else { "tcp6" };
    let text = netns::run_in(ns, move || {
        std::fs::read_to_string(format!("/proc/thread-self/net/{table}"))
    })
    .ok()?;
    process_of(listening_inode(&text, address)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_read() {
        // As /proc/net/tcp prints them on a little-endian machine.
        let ip = u32::from_ne_bytes([169, 254, 169, 254]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: {ip:08X}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: {ip:08X}:0051 00000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n"
        );
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        assert_eq!(listening_inode(&table, metadata), Some(4242));
        assert_eq!(
            listening_inode(&table, "169.254.169.254:81".parse().unwrap()),
            None,
            "not listening"
        );
        let any = format!(
            "{}\n   0: 00000000:0050 00000000:0000 0A 0:0 0:0 0 0 0 77 1\n",
            table.lines().next().unwrap()
        );
        assert_eq!(
            listening_inode(&any, metadata),
            Some(77),
            "0.0.0.0:80 holds it too"
        );
        let v6 = parse_address("000080FE00000000FF3E16F8A9FEA9FE:0050").unwrap();
        assert_eq!(v6.port(), 80);
    }
}
