//! Listening sockets sized for boot storms. `std`'s and tokio's `bind`
//! listen with a backlog of 128: a burst of fresh connections beyond it
//! (hundreds of guests booting at once) meets SYN cookies and one-second
//! retransmits. The kernel caps the backlog at `net.core.somaxconn`
//! (4096 by default since Linux 5.4).

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// Backlog asked for on every listening TCP socket.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`], not yet
/// registered with a runtime (so it can be made inside a network
/// namespace switch).
pub fn bind_tcp_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted server binds while old connections linger
    // in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// [`bind_tcp_std`] as a tokio listener (needs a runtime).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_tcp_std(addr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backlog_is_the_storm_sized_one() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        // /proc/net/tcp does not show the backlog; `ss` does (Send-Q of a
        // listening socket), capped by somaxconn.
        let somaxconn: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG);
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: i32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no listening socket in {text:?}"));
        assert_eq!(backlog, LISTEN_BACKLOG.min(somaxconn));
    }
}
