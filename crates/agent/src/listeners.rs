//! The agent's sockets: 169.254.169.254:80 (and [fe80::a9fe:a9fe]:80)
//! inside a network's namespace, bound by a thread that entered it and
//! then served by the runtime (no haproxy, no extra hop); and UNIX sockets
//! (haproxy-compatible, status), served by the same accept loop and limits.

use crate::error::AgentError;
use crate::guest::guest_service;
use crate::proxy::Proxy;
use crate::{netns, port_holder};
use meta169_http::{Handler, ServerLimits};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Bind `addr` inside namespace `ns` and serve `network`'s guests on it.
pub async fn listen_in(
    ns: &str,
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    network: &str,
    limits: ServerLimits,
) -> Result<JoinHandle<()>, AgentError> {
    let ns_name = ns.to_string();
    // Entering the namespace blocks a thread for a moment; not the one
    // serving guests.
    let bound = tokio::task::spawn_blocking(move || {
        netns::run_in(&ns_name, move || meta169_http::bind::bind_tcp_std(addr))
    })
    .await
    .map_err(AgentError::task)?;
    let bound = match bound {
        Ok(bound) => bound,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let ns_name = ns.to_string();
            let holder = tokio::task::spawn_blocking(move || port_holder::holder(&ns_name, addr))
                .await
                .ok()
                .flatten();
            let who = match holder {
                Some(h) => format!("{} (pid {})", h.command, h.pid),
                None => "another process (run `ip netns exec NS ss -ltnp` to see which)"
                    .replace("NS", ns),
            };
            return Err(AgentError::Netlink(std::io::Error::new(
                e.kind(),
                format!("{addr} in {ns} is held by {who}, most likely a haproxy left by neutron-ovn-metadata-agent: stop that agent and its haproxy; meta169 agent keeps retrying and serves once the port is free"),
            )));
        }
        Err(e) => return Err(AgentError::io(format!("binding {addr} in {ns}"), e)),
    };
    let listener = tokio::net::TcpListener::from_std(bound).map_err(AgentError::Netlink)?;
    // Session-token answers carry a hop limit for the guest's link only.
    let limits = ServerLimits {
        honour_hop_limits: true,
        ..limits
    };
    Ok(tokio::spawn(meta169_http::serve(
        listener,
        guest_service(proxy, Arc::from(network)),
        limits,
        std::future::pending(),
    )))
}

/// Serve `handler` on a UNIX socket at `path` (a stale socket file is
/// replaced) with file mode `mode`.
pub fn serve_unix(
    path: &Path,
    handler: impl Handler,
    limits: ServerLimits,
    mode: u32,
) -> Result<JoinHandle<()>, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| AgentError::io(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::io(format!("setting the mode of {}", path.display()), e))?;
    Ok(tokio::spawn(meta169_http::serve(
        listener,
        handler,
        limits,
        std::future::pending(),
    )))
}
