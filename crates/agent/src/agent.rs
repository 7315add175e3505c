//! The agent's two loops. Reconcile: Southbound rows in, namespaces,
//! veths, addresses, bridge ports and listeners out; idempotent, adopting
//! what already exists. Serve: the listeners answer guests from the
//! in-memory index (see [`crate::proxy`]).

use crate::net::Net;
use crate::proxy::{guest_service, handle_haproxy, ListenerState, Proxy, Upstream};
use crate::sb::{self, NetworkSpec, SbView, NAMESPACE_PREFIX};
use crate::{netns, ovs, AgentError};
use axum::Router;
use meta169_http::ServerLimits;
use meta169_ovsdb::{Monitor, MonitorOptions, Remote, Replica, TableMonitor};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Where the outer veth ends go.
#[derive(Clone, Debug, PartialEq)]
pub enum BridgeMode {
    /// An OVS bridge, through the local Open_vSwitch database; `None`: the
    /// chassis' `ovn-bridge` (default `br-int`).
    Ovs(Option<String>),
    /// A Linux bridge, by name.
    Linux(String),
}

#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub sb: Remote,
    /// Further members of a clustered Southbound, tried in turn.
    pub sb_more: Vec<Remote>,
    pub ovs: Remote,
    /// This chassis' name; `None`: `system-id` from the Open_vSwitch database.
    pub chassis: Option<String>,
    pub bridge: BridgeMode,
    pub upstream: Upstream,
    /// haproxy-compatible UNIX socket (`X-OVN-Network-ID`), if wanted.
    pub haproxy_socket: Option<PathBuf>,
    /// Its file mode: haproxy must be able to write to it (Neutron's
    /// `metadata_proxy_socket_mode`: user 0644, group 0664, all 0666).
    pub haproxy_socket_mode: u32,
    /// Status socket for `meta169 trace`.
    pub status_socket: Option<PathBuf>,
    pub limits: ServerLimits,
    /// Configure fe80::a9fe:a9fe where a network has IPv6 guests.
    pub ipv6: bool,
    /// Most random delay before writing a new sb-cfg (Neutron's herd guard).
    pub sb_cfg_max_delay: Duration,
    /// A full re-check of everything this often, besides every change.
    pub resync_interval: Duration,
    /// Per-guest request rate limits (Neutron's `[metadata_rate_limiting]`);
    /// none by default, as in Neutron.
    pub rate_limits: Option<crate::RateLimits>,
}

impl AgentSettings {
    pub fn new(sb: Remote, ovs: Remote, upstream: Upstream) -> Self {
        AgentSettings {
            sb,
            sb_more: Vec::new(),
            ovs,
            chassis: None,
            bridge: BridgeMode::Ovs(None),
            upstream,
            haproxy_socket: None,
            haproxy_socket_mode: 0o644,
            status_socket: None,
            limits: ServerLimits::default(),
            ipv6: true,
            sb_cfg_max_delay: Duration::from_secs(3),
            resync_interval: Duration::from_secs(60),
            rate_limits: None,
        }
    }
}

/// What `trace` and tests can ask a running agent.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub chassis: String,
    pub networks: BTreeMap<String, NetworkSpec>,
    pub sb_connected: bool,
}

struct Provisioned {
    spec: NetworkSpec,
    listeners: Vec<JoinHandle<()>>,
    /// The listeners' shape: IPv6 or not, and the inner veth's index the
    /// IPv6 socket is scoped to.
    v6: bool,
    inner_index: u32,
}

impl Drop for Provisioned {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

/// A running agent.
pub struct Agent {
    settings: AgentSettings,
    pub proxy: Arc<Proxy>,
    sb: Monitor,
    ovs: Option<Monitor>,
    chassis: String,
    bridge: String,
    root: Net,
    provisioned: HashMap<String, Provisioned>,
    warned: HashSet<String>,
    pb_conditions: Vec<serde_json::Value>,
    dp_conditions: Vec<serde_json::Value>,
    cleaned_up: bool,
    sb_cfg_due: Option<(i64, Instant)>,
    status: Arc<RwLock<Status>>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

const SB_DB: &str = "OVN_Southbound";
const WAIT: Duration = Duration::from_secs(30);

fn sb_monitor(remotes: Vec<Remote>, chassis: &str) -> Monitor {
    Monitor::start_any(
        remotes,
        MonitorOptions::new(
            SB_DB,
            vec![
                TableMonitor::all("Chassis")
                    .columns(&["name"])
                    .when(vec![json!(["name", "==", chassis])]),
                TableMonitor::all("Chassis_Private")
                    .columns(&["name", "external_ids", "nb_cfg"])
                    .when(vec![json!(["name", "==", chassis])]),
                TableMonitor::all("SB_Global").columns(&["nb_cfg"]),
                TableMonitor::all("Port_Binding")
                    .columns(&[
                        "logical_port",
                        "type",
                        "chassis",
                        "additional_chassis",
                        "datapath",
                        "mac",
                        "external_ids",
                    ])
                    .when(vec![json!(false)]),
                TableMonitor::all("Datapath_Binding")
                    .columns(&["external_ids"])
                    .when(vec![json!(false)]),
            ],
        ),
    )
}

/// Wait for a monitor's first snapshot, as long as it takes: like Neutron's
/// agent, a node that boots before its databases waits for them, saying so
/// every [`WAIT`].
async fn wait_ready(monitor: &Monitor, what: &str) -> Result<(), AgentError> {
    loop {
        match monitor.ready(WAIT).await {
            Ok(_) => return Ok(()),
            Err(meta169_ovsdb::OvsdbError::Timeout(_)) => {
                let state = monitor.state().borrow().clone();
                tracing::warn!("still waiting for {what} ({state:?}); check that it runs and that the remote is right");
            }
            Err(e) => {
                return Err(AgentError::Database {
                    what: what.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Neutron's chassis UUID: the name if it is a UUID, else UUIDv5 of it.
pub fn chassis_uuid(name: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(name).unwrap_or_else(|_| {
        let namespace =
            uuid::Uuid::parse_str("d34bf9f6-da32-4871-9af8-15a4626b41ab").expect("constant");
        uuid::Uuid::new_v5(&namespace, name.as_bytes())
    })
}

/// Neutron's agent id for this chassis: UUIDv5(chassis UUID, "metadata_agent").
pub fn metadata_agent_id(chassis: &str) -> String {
    uuid::Uuid::new_v5(&chassis_uuid(chassis), b"metadata_agent").to_string()
}

impl Agent {
    /// Connect to the databases and start the listeners' shared proxy.
    pub async fn start(settings: AgentSettings) -> Result<Agent, AgentError> {
        let needs_ovs = matches!(settings.bridge, BridgeMode::Ovs(_)) || settings.chassis.is_none();
        let ovs = if needs_ovs {
            let monitor = ovs::start(settings.ovs.clone());
            wait_ready(
                &monitor,
                &format!("the local Open_vSwitch database at {}", settings.ovs),
            )
            .await?;
            Some(monitor)
        } else {
            None
        };
        let ovs_replica = ovs.as_ref().map(|m| m.replica());
        let chassis = match (&settings.chassis, &ovs_replica) {
            (Some(c), _) => c.clone(),
            (None, Some(r)) => ovs::system_id(r).ok_or_else(|| {
                AgentError::Config("the Open_vSwitch table has no external_ids:system-id; set it (ovn-controller needs it too) or pass --chassis".into())
            })?,
            (None, None) => return Err(AgentError::Config("no chassis name".into())),
        };
        let bridge = match (&settings.bridge, &ovs_replica) {
            (BridgeMode::Ovs(Some(name)), _) | (BridgeMode::Linux(name), _) => name.clone(),
            (BridgeMode::Ovs(None), Some(r)) => ovs::integration_bridge(r),
            (BridgeMode::Ovs(None), None) => "br-int".into(),
        };
        let mut proxy = Proxy::new(&settings.upstream)
            .map_err(|e| AgentError::Config(format!("upstream client: {e}")))?;
        if let Some(limits) = &settings.rate_limits {
            proxy = proxy.with_rate_limits(limits.clone());
        }
        let proxy = Arc::new(proxy);
        let remotes = std::iter::once(settings.sb.clone())
            .chain(settings.sb_more.iter().cloned())
            .collect();
        let sb = sb_monitor(remotes, &chassis);
        wait_ready(
            &sb,
            &format!("the OVN Southbound database at {}", settings.sb),
        )
        .await?;
        tracing::info!(%chassis, %bridge, sb = %settings.sb, "agent connected");
        let root = Net::root().map_err(AgentError::Netlink)?;
        let mut agent = Agent {
            status: Arc::new(RwLock::new(Status {
                chassis: chassis.clone(),
                ..Status::default()
            })),
            settings,
            proxy,
            sb,
            ovs,
            chassis,
            bridge,
            root,
            provisioned: HashMap::new(),
            warned: HashSet::new(),
            pb_conditions: vec![json!(false)],
            dp_conditions: vec![json!(false)],
            cleaned_up: false,
            sb_cfg_due: None,
            servers: Vec::new(),
        };
        agent.start_sockets()?;
        Ok(agent)
    }

    pub fn chassis(&self) -> &str {
        &self.chassis
    }

    pub fn status(&self) -> Arc<RwLock<Status>> {
        self.status.clone()
    }

    fn start_sockets(&mut self) -> Result<(), AgentError> {
        if let Some(path) = self.settings.haproxy_socket.clone() {
            let router = Router::new()
                .fallback(handle_haproxy)
                .with_state(self.proxy.clone());
            self.servers.push(serve_unix(
                &path,
                router,
                self.settings.limits.clone(),
                self.settings.haproxy_socket_mode,
            )?);
            tracing::info!(socket = %path.display(), "haproxy-compatible socket listening");
        }
        if let Some(path) = self.settings.status_socket.clone() {
            let router = crate::status::router(self.proxy.clone(), self.status.clone());
            self.servers.push(serve_unix(
                &path,
                router,
                self.settings.limits.clone(),
                0o600,
            )?);
        }
        Ok(())
    }

    /// Run until `shutdown` completes. Namespaces stay in place when it
    /// stops: a restarted agent adopts them without interrupting guests.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut sb_changes = self.sb.subscribe();
        let mut ovs_changes = self.ovs.as_ref().map(|m| m.subscribe());
        let mut sb_state = self.sb.state();
        loop {
            let retry = self.step().await;
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                self.settings.resync_interval
            };
            let wait = match self.sb_cfg_due {
                Some((_, at)) => wait.min(at.saturating_duration_since(Instant::now())),
                None => wait,
            };
            let ovs_changed = async {
                match ovs_changes.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                r = sb_changes.changed() => if r.is_err() { break },
                _ = ovs_changed => {},
                _ = sb_state.changed() => {
                    let connected = matches!(*sb_state.borrow(), meta169_ovsdb::ConnectionState::Connected);
                    if let Ok(mut s) = self.status.write() { s.sb_connected = connected; }
                },
                _ = tokio::time::sleep(wait) => {},
            }
        }
        tracing::info!("agent stopping; namespaces are left for the next start to adopt");
        Ok(())
    }

    /// One pass of the reconcile loop; `true` asks for a quick retry.
    pub async fn step(&mut self) -> bool {
        let replica: Arc<Replica> = self.sb.replica();
        let view = sb::read(&replica, &self.chassis, &mut self.warned);
        self.follow_conditions(&view);
        self.register(&view).await;
        self.proxy.set_index(view.index.clone());
        if view.chassis_uuid.is_none() {
            // Without our Chassis row nothing can be known to be bound here;
            // tearing down now would cut guests off during an ovn-controller restart.
            tracing::debug!(chassis = %self.chassis, "no Chassis row for this chassis yet");
            return false;
        }
        let mut retry = false;
        if !self.cleaned_up {
            match netns::list(NAMESPACE_PREFIX) {
                Ok(existing) => {
                    for ns in existing {
                        let network = ns.trim_start_matches(NAMESPACE_PREFIX).to_string();
                        if !view.networks.contains_key(&network) {
                            tracing::info!(namespace = %ns, "removing stale metadata namespace");
                            if let Err(e) = self.teardown(&network).await {
                                tracing::warn!(namespace = %ns, "removing stale namespace failed: {e}");
                                retry = true;
                            }
                        }
                    }
                    self.cleaned_up = !retry;
                }
                Err(e) => {
                    tracing::warn!("cannot list namespaces: {e}");
                    retry = true;
                }
            }
        }
        for (network, spec) in &view.networks {
            if self
                .provisioned
                .get(network)
                // Unchanged, still plugged, and nobody removed the namespace.
                .is_some_and(|p| {
                    &p.spec == spec && self.is_plugged(p) && netns::exists(&spec.namespace())
                })
            {
                continue;
            }
            match self.provision(spec).await {
                Ok(()) => {
                    tracing::info!(%network, namespace = %spec.namespace(), "metadata provisioned")
                }
                Err(e) => {
                    tracing::warn!(%network, "provisioning failed, will retry: {e}");
                    retry = true;
                }
            }
        }
        let gone: Vec<String> = self
            .provisioned
            .keys()
            .filter(|n| !view.networks.contains_key(*n))
            .cloned()
            .collect();
        for network in gone {
            match self.teardown(&network).await {
                Ok(()) => {
                    tracing::info!(%network, "metadata removed: no VM port of the network is bound here")
                }
                Err(e) => {
                    tracing::warn!(%network, "teardown failed, will retry: {e}");
                    retry = true;
                }
            }
        }
        if let Ok(mut s) = self.status.write() {
            s.networks = self
                .provisioned
                .iter()
                .map(|(n, p)| (n.clone(), p.spec.clone()))
                .collect();
        }
        retry
    }

    /// Is the integration bridge on OVS's userspace (netdev) datapath?
    fn userspace_datapath(&self) -> bool {
        match (&self.settings.bridge, &self.ovs) {
            (BridgeMode::Ovs(_), Some(monitor)) => {
                ovs::datapath_type(&monitor.replica(), &self.bridge).as_deref() == Some("netdev")
            }
            _ => false,
        }
    }

    /// With OVS, an outer port someone removed is put back.
    fn is_plugged(&self, p: &Provisioned) -> bool {
        match (&self.settings.bridge, &self.ovs) {
            (BridgeMode::Ovs(_), Some(monitor)) => {
                let (outer, _) = p.spec.veth_names();
                ovs::is_plugged(
                    &monitor.replica(),
                    &self.bridge,
                    &outer,
                    &p.spec.metadata.logical_port,
                )
            }
            _ => true,
        }
    }

    fn follow_conditions(&mut self, view: &SbView) {
        let networks: BTreeSet<String> = view.local_datapaths.values().cloned().collect();
        let pb = sb::port_binding_conditions(view.chassis_uuid.as_deref(), &networks);
        if pb != self.pb_conditions {
            self.sb.set_conditions("Port_Binding", pb.clone());
            self.pb_conditions = pb;
        }
        let dp = sb::datapath_conditions(&view.local_datapaths);
        if dp != self.dp_conditions {
            self.sb.set_conditions("Datapath_Binding", dp.clone());
            self.dp_conditions = dp;
        }
    }

    /// Keep the Chassis_Private keys Neutron's server reads current. Only
    /// these keys are ever written to the Southbound.
    async fn register(&mut self, view: &SbView) {
        let Some((row, ids, nb_cfg)) = &view.chassis_private else {
            return;
        };
        let target_cfg = view.sb_nb_cfg.unwrap_or(*nb_cfg);
        let current_cfg = ids
            .get("neutron:ovn-metadata-sb-cfg")
            .and_then(|v| v.parse::<i64>().ok());
        let mut writes: Vec<(String, String)> = Vec::new();
        if !ids.contains_key("neutron:ovn-metadata-id") {
            writes.push((
                "neutron:ovn-metadata-id".into(),
                metadata_agent_id(&self.chassis),
            ));
        }
        if ids.get("neutron:ovn-bridge") != Some(&self.bridge) {
            writes.push(("neutron:ovn-bridge".into(), self.bridge.clone()));
        }
        if current_cfg != Some(target_cfg) {
            let first = current_cfg.is_none();
            let due = match self.sb_cfg_due {
                Some((cfg, at)) if cfg == target_cfg => at,
                _ => {
                    // Neutron spreads these writes so a cloud's agents do not all write at once.
                    let max = self.settings.sb_cfg_max_delay.as_millis() as u64;
                    let delay = if first || max == 0 {
                        0
                    } else {
                        rand::random::<u64>() % max
                    };
                    let at = Instant::now() + Duration::from_millis(delay);
                    self.sb_cfg_due = Some((target_cfg, at));
                    at
                }
            };
            if Instant::now() >= due {
                writes.push(("neutron:ovn-metadata-sb-cfg".into(), target_cfg.to_string()));
            }
        }
        if writes.is_empty() {
            return;
        }
        let keys: Vec<&str> = writes.iter().map(|(k, _)| k.as_str()).collect();
        let op = json!({"op": "mutate", "table": "Chassis_Private", "where": [["_uuid", "==", ["uuid", row]]],
        "mutations": [
            ["external_ids", "delete", ["set", keys]],
            ["external_ids", "insert", meta169_ovsdb::datum::string_map(writes.iter().map(|(k, v)| (k.as_str(), v.as_str())))]
        ]});
        match self.sb.transact(vec![op]).await {
            Ok(_) => {
                if writes
                    .iter()
                    .any(|(k, _)| k == "neutron:ovn-metadata-sb-cfg")
                {
                    self.sb_cfg_due = None;
                }
                tracing::debug!(?writes, "Chassis_Private updated");
            }
            Err(e) => tracing::warn!("registering in Chassis_Private failed (will retry): {e}"),
        }
    }

    async fn provision(&mut self, spec: &NetworkSpec) -> Result<(), AgentError> {
        let ns = spec.namespace();
        let (outer, inner) = spec.veth_names();
        let ns_name = ns.clone();
        tokio::task::spawn_blocking(move || netns::create(&ns_name))
            .await
            .map_err(|e| AgentError::Netlink(std::io::Error::other(e.to_string())))?
            .map_err(|e| {
                AgentError::Netlink(std::io::Error::new(
                    e.kind(),
                    format!("creating namespace {ns}: {e}"),
                ))
            })?;
        // Entering the namespace blocks a thread for a moment; not the
        // one serving guests.
        let ns_name = ns.clone();
        let inside = tokio::task::spawn_blocking(move || Net::inside(&ns_name))
            .await
            .map_err(|e| AgentError::Netlink(std::io::Error::other(e.to_string())))?
            .map_err(AgentError::Netlink)?;
        let inner_link = match inside.link(&inner).await.map_err(AgentError::Netlink)? {
            Some(link) => link,
            None => {
                if let Some(stale) = self.root.link(&outer).await.map_err(AgentError::Netlink)? {
                    self.root
                        .delete_link(stale.index)
                        .await
                        .map_err(AgentError::Netlink)?;
                }
                self.root
                    .add_veth_into(&outer, &inner, &ns)
                    .await
                    .map_err(AgentError::Netlink)?;
                inside
                    .link(&inner)
                    .await
                    .map_err(AgentError::Netlink)?
                    .ok_or_else(|| {
                        AgentError::Netlink(std::io::Error::other(format!(
                            "{inner} did not appear in {ns}"
                        )))
                    })?
            }
        };
        let outer_link = self
            .root
            .link(&outer)
            .await
            .map_err(AgentError::Netlink)?
            .ok_or_else(|| {
                AgentError::Netlink(std::io::Error::other(format!("{outer} is missing")))
            })?;
        let mtu = spec.metadata.mtu;
        inside
            .configure(inner_link.index, Some(spec.metadata.mac), mtu)
            .await
            .map_err(AgentError::Netlink)?;
        if let Some(lo) = inside.link("lo").await.map_err(AgentError::Netlink)? {
            inside
                .configure(lo.index, None, 0)
                .await
                .map_err(AgentError::Netlink)?;
        }
        self.root
            .configure(outer_link.index, None, mtu)
            .await
            .map_err(AgentError::Netlink)?;

        if self.userspace_datapath() {
            let name = inner.clone();
            tokio::task::spawn_blocking({
                let ns = ns.clone();
                move || netns::run_in(&ns, move || crate::net::disable_tx_checksum(&name))
            })
            .await
            .map_err(|e| AgentError::Netlink(std::io::Error::other(e.to_string())))?
            .map_err(AgentError::Netlink)?;
        }

        let wanted = spec.addresses(self.settings.ipv6);
        let current = inside
            .addresses(inner_link.index)
            .await
            .map_err(AgentError::Netlink)?;
        for (ip, prefix) in &wanted {
            if !current.contains(&(*ip, *prefix)) {
                inside
                    .add_address(inner_link.index, *ip, *prefix)
                    .await
                    .map_err(AgentError::Netlink)?;
            }
        }
        for (ip, prefix) in &current {
            if !wanted.contains(&(*ip, *prefix)) {
                inside
                    .delete_address(inner_link.index, *ip, *prefix)
                    .await
                    .map_err(AgentError::Netlink)?;
            }
        }

        match (&self.settings.bridge, &self.ovs) {
            (BridgeMode::Ovs(_), Some(monitor)) => {
                ovs::plug(monitor, &self.bridge, &outer, &spec.metadata.logical_port)
                    .await
                    .map_err(|e| AgentError::Database {
                        what: format!("plugging {outer} into {}", self.bridge),
                        reason: e.to_string(),
                    })?
            }
            _ => {
                let bridge = self
                    .root
                    .link(&self.bridge)
                    .await
                    .map_err(AgentError::Netlink)?
                    .ok_or_else(|| {
                        AgentError::Config(format!(
                            "Linux bridge {} does not exist; create it or fix --bridge",
                            self.bridge
                        ))
                    })?;
                if outer_link.controller != Some(bridge.index) {
                    self.root
                        .set_controller(outer_link.index, bridge.index)
                        .await
                        .map_err(AgentError::Netlink)?;
                }
            }
        }

        let v6 = wanted.iter().any(|(ip, _)| ip.is_ipv6());
        let previous = self.provisioned.remove(&spec.network_id);
        let listeners = match previous {
            Some(mut p)
                if p.v6 == v6
                    && p.inner_index == inner_link.index
                    && !p.listeners.is_empty()
                    && p.listeners.iter().all(|l| !l.is_finished()) =>
            {
                std::mem::take(&mut p.listeners)
            }
            _ => {
                let mut addrs = vec![SocketAddr::from((sb::METADATA_V4, 80))];
                if v6 {
                    addrs.push(SocketAddr::V6(SocketAddrV6::new(
                        sb::METADATA_V6,
                        80,
                        0,
                        inner_link.index,
                    )));
                }
                let mut tasks = Vec::new();
                for addr in addrs {
                    tasks.push(self.listen(&ns, addr, &spec.network_id).await?);
                }
                tasks
            }
        };
        self.provisioned.insert(
            spec.network_id.clone(),
            Provisioned {
                spec: spec.clone(),
                listeners,
                v6,
                inner_index: inner_link.index,
            },
        );
        Ok(())
    }

    async fn listen(
        &self,
        ns: &str,
        addr: SocketAddr,
        network: &str,
    ) -> Result<JoinHandle<()>, AgentError> {
        let ns_name = ns.to_string();
        let std_listener = tokio::task::spawn_blocking(move || {
            netns::run_in(&ns_name, move || {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
        })
        .await
        .map_err(|e| AgentError::Netlink(std::io::Error::other(e.to_string())))?
        .map_err(|e| {
            AgentError::Netlink(std::io::Error::new(
                e.kind(),
                format!("binding {addr} in {ns}: {e}"),
            ))
        })?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(AgentError::Netlink)?;
        let state = ListenerState {
            proxy: self.proxy.clone(),
            network_id: Arc::from(network),
        };
        let limits = self.settings.limits.clone();
        Ok(tokio::spawn(meta169_http::serve(
            listener,
            guest_service(state),
            limits,
            std::future::pending(),
        )))
    }

    async fn teardown(&mut self, network: &str) -> Result<(), AgentError> {
        self.provisioned.remove(network);
        let (outer, _) = sb::veth_names(network);
        if let (BridgeMode::Ovs(_), Some(monitor)) = (&self.settings.bridge, &self.ovs) {
            ovs::unplug(monitor, &outer)
                .await
                .map_err(|e| AgentError::Database {
                    what: format!("unplugging {outer}"),
                    reason: e.to_string(),
                })?;
        }
        if let Some(link) = self.root.link(&outer).await.map_err(AgentError::Netlink)? {
            self.root
                .delete_link(link.index)
                .await
                .map_err(AgentError::Netlink)?;
        }
        let ns = format!("{NAMESPACE_PREFIX}{network}");
        tokio::task::spawn_blocking(move || netns::delete(&ns))
            .await
            .map_err(|e| AgentError::Netlink(std::io::Error::other(e.to_string())))?
            .map_err(AgentError::Netlink)
    }

    /// Remove every namespace this agent provisioned (tests, `--cleanup`).
    pub async fn teardown_all(&mut self) {
        let networks: Vec<String> = self.provisioned.keys().cloned().collect();
        for n in networks {
            if let Err(e) = self.teardown(&n).await {
                tracing::warn!(network = %n, "teardown failed: {e}");
            }
        }
    }

    /// Provisioned networks and their namespaces.
    pub fn networks(&self) -> Vec<String> {
        let mut n: Vec<String> = self.provisioned.keys().cloned().collect();
        n.sort();
        n
    }

    /// Look up a guest the way a listener does.
    pub fn lookup(&self, network: &str, ip: IpAddr) -> Option<Arc<sb::Target>> {
        self.proxy.lookup(network, ip)
    }
}

/// Serve a router on a UNIX socket (stale socket file replaced).
fn serve_unix(
    path: &std::path::Path,
    router: Router,
    limits: ServerLimits,
    mode: u32,
) -> Result<JoinHandle<()>, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(AgentError::Netlink)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
        AgentError::Netlink(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(AgentError::Netlink)?;
    Ok(tokio::spawn(async move {
        let unspecified = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (router, limits) = (router.clone(), limits.clone());
            tokio::spawn(async move {
                meta169_http::serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    unspecified,
                    router,
                    &limits,
                )
                .await;
            });
        }
    }))
}
