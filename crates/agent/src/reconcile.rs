//! The reconcile loop: Southbound rows in ([`crate::sb::read`]), a plan
//! out ([`crate::plan`]), carried out by [`crate::plumb`]; idempotent, and
//! adopting what a previous run left. It also follows the monitor
//! conditions the view calls for, keeps the Chassis_Private registration
//! current and publishes the guest index the listeners read.

use crate::error::AgentError;
use crate::guest::haproxy_service;
use crate::listeners::serve_unix;
use crate::neutron::{network_of_namespace, NAMESPACE_PREFIX};
use crate::plan::{plan, Action, Existing, Removal};
use crate::plumb::{Bridge, Plumber};
use crate::proxy::Proxy;
use crate::register::Registrar;
use crate::sb::{self, Conditions};
use crate::settings::{AgentSettings, BridgeMode};
use crate::status::{Health, Status};
use crate::{netns, ovs};
use meta169_ovsdb::{ConnectionState, Monitor, OvsdbError};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the agent says it is still waiting for a database.
const WAIT_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// How soon a step that failed is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The UNIX status socket is the owner's only.
const STATUS_SOCKET_MODE: u32 = 0o600;

/// A running agent.
pub struct Agent {
    settings: AgentSettings,
    proxy: Arc<Proxy>,
    sb: Monitor,
    chassis: String,
    plumber: Plumber,
    registrar: Registrar,
    /// Rows already reported as malformed.
    warned: HashSet<String>,
    /// The conditions last asked of the Southbound monitor.
    conditions: Conditions,
    /// Namespaces left by an earlier run are still to be adopted or removed.
    cleanup_pending: bool,
    /// A complete view has been acted on.
    synced: bool,
    /// The last provisioning error of each network that keeps failing.
    failing: HashMap<String, String>,
    /// The Southbound has been connected at least once (reconnects count after).
    connected_before: bool,
    status: Arc<RwLock<Status>>,
    sockets: Vec<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for socket in &self.sockets {
            socket.abort();
        }
    }
}

/// Wait for a monitor's first snapshot, as long as it takes: like Neutron's
/// agent, a node that boots before its databases waits for them, saying so
/// every [`WAIT_REPORT_INTERVAL`].
async fn wait_ready(monitor: &Monitor, what: &str) -> Result<(), AgentError> {
    loop {
        match monitor.ready(WAIT_REPORT_INTERVAL).await {
            Ok(_) => return Ok(()),
            Err(OvsdbError::Timeout(_)) => {
                let state = monitor.state().borrow().clone();
                tracing::warn!("still waiting for {what} ({state}); check that it runs and that the remote is right");
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

impl Agent {
    /// Connect to the databases and open the agent's UNIX sockets.
    pub async fn start(settings: AgentSettings) -> Result<Agent, AgentError> {
        Self::start_with(settings, Health::default()).await
    }

    /// [`Agent::start`], reporting into `health` (which an operations
    /// listener may already be serving).
    pub async fn start_with(settings: AgentSettings, health: Health) -> Result<Agent, AgentError> {
        // What cannot fix itself fails now; a database that is down is
        // waited for below.
        for remote in settings.sb_remotes() {
            remote
                .check()
                .map_err(|e| AgentError::Config(e.to_string()))?;
        }
        crate::capabilities::check().map_err(|e| AgentError::Config(e.to_string()))?;
        let needs_ovs = matches!(settings.bridge, BridgeMode::Ovs(_)) || settings.chassis.is_none();
        let ovs = if needs_ovs {
            let monitor = ovs::start(settings.ovs.clone());
            let what = format!("the local Open_vSwitch database at {}", settings.ovs);
            wait_ready(&monitor, &what).await?;
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
        let bridge_name = match (&settings.bridge, &ovs_replica) {
            (BridgeMode::Ovs(Some(name)), _) | (BridgeMode::Linux(name), _) => name.clone(),
            (BridgeMode::Ovs(None), Some(r)) => ovs::integration_bridge(r),
            (BridgeMode::Ovs(None), None) => "br-int".into(),
        };
        let mut proxy =
            Proxy::new(&settings.upstream).map_err(|e| AgentError::Config(e.to_string()))?;
        if let Some(limits) = &settings.rate_limits {
            proxy = proxy.with_rate_limits(limits.clone());
        }
        proxy = proxy
            .with_token_hop_limit(settings.token_hop_limit)
            .with_access_log(settings.access_log)
            .with_metrics(health.metrics.clone());
        let proxy = Arc::new(proxy);
        let sb = Monitor::start_any(settings.sb_remotes(), sb::monitor_options(&chassis));
        wait_ready(
            &sb,
            &format!("the OVN Southbound database at {}", settings.sb),
        )
        .await?;
        tracing::info!(%chassis, bridge = %bridge_name, sb = %settings.sb, "agent connected");
        let bridge = Bridge {
            mode: settings.bridge.clone(),
            name: bridge_name.clone(),
            ovs,
        };
        let plumber = Plumber::new(
            bridge,
            proxy.clone(),
            settings.limits.clone(),
            settings.ipv6,
        )?;
        let mut agent = Agent {
            registrar: Registrar::new(&chassis, &bridge_name, settings.sb_cfg_max_delay),
            status: {
                if let Ok(mut status) = health.status.write() {
                    status.chassis = chassis.clone();
                }
                health.status.clone()
            },
            settings,
            proxy,
            sb,
            chassis,
            plumber,
            warned: HashSet::new(),
            conditions: Conditions::initial(),
            cleanup_pending: true,
            synced: false,
            failing: HashMap::new(),
            connected_before: false,
            sockets: Vec::new(),
        };
        agent.open_sockets()?;
        Ok(agent)
    }

    pub fn chassis(&self) -> &str {
        &self.chassis
    }

    pub fn status(&self) -> Arc<RwLock<Status>> {
        self.status.clone()
    }

    /// The serve path's shared state.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    fn open_sockets(&mut self) -> Result<(), AgentError> {
        let limits = &self.settings.limits;
        if let Some(path) = &self.settings.haproxy_socket {
            let handler = haproxy_service(self.proxy.clone());
            self.sockets.push(serve_unix(
                path,
                handler,
                limits.clone(),
                self.settings.haproxy_socket_mode,
            )?);
            tracing::info!(socket = %path.display(), "haproxy-compatible socket listening");
        }
        if let Some(path) = &self.settings.status_socket {
            let router = crate::status::router(self.proxy.clone(), self.status.clone());
            self.sockets.push(serve_unix(
                path,
                router,
                limits.clone(),
                STATUS_SOCKET_MODE,
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
        let mut ovs_changes = self.plumber.bridge().ovs.as_ref().map(|m| m.subscribe());
        let mut sb_state = self.sb.state();
        let connected = matches!(*sb_state.borrow_and_update(), ConnectionState::Connected);
        self.note_connection(connected);
        loop {
            let retry = self.step().await;
            let mut wait = if retry {
                RETRY_DELAY
            } else {
                self.settings.resync_interval
            };
            if let Some(due) = self.registrar.next_due() {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
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
                    let connected = matches!(*sb_state.borrow(), ConnectionState::Connected);
                    self.note_connection(connected);
                },
                _ = tokio::time::sleep(wait) => {},
            }
        }
        tracing::info!("agent stopping; namespaces are left for the next start to adopt");
        Ok(())
    }

    /// Keep the connection's state for trace and the metrics.
    fn note_connection(&mut self, connected: bool) {
        let metrics = self.proxy.metrics();
        if connected && metrics.sb_connected.get() == 0 && self.connected_before {
            metrics.sb_reconnects.inc();
        }
        self.connected_before |= connected;
        metrics.sb_connected.set(i64::from(connected));
        if let Ok(mut s) = self.status.write() {
            s.sb_connected = connected;
        }
    }

    /// One pass: view → plan → plumb. `true` asks for a quick retry.
    pub async fn step(&mut self) -> bool {
        let replica = self.sb.replica();
        let view = sb::read(&replica, &self.chassis, &mut self.warned);
        let wanted = Conditions::for_view(&view);
        for (table, clauses) in self.conditions.changes_to(&wanted) {
            self.sb.set_conditions(table, clauses);
        }
        let complete = wanted.reflected_by(&replica);
        self.conditions = wanted;
        self.registrar.register(&self.sb, &view).await;
        self.proxy.set_index(view.index.clone());
        let mut retry = false;
        let namespaces = if self.cleanup_pending {
            match netns::list(NAMESPACE_PREFIX) {
                Ok(names) => Some(
                    names
                        .iter()
                        .filter_map(|n| network_of_namespace(n).map(str::to_string))
                        .collect::<BTreeSet<_>>(),
                ),
                Err(e) => {
                    tracing::warn!("cannot list namespaces: {e}");
                    retry = true;
                    None
                }
            }
        } else {
            None
        };
        let listed = namespaces.is_some();
        let existing = Existing {
            namespaces,
            provisioned: self.plumber.provisioned(),
        };
        if !complete {
            tracing::debug!("the Southbound view is not complete yet (monitor conditions pending)");
        }
        let actions = plan(&view, complete, &existing);
        let mut stale_failed = false;
        for action in actions {
            match action {
                Action::Provision(spec) => match self.plumber.provision(&spec).await {
                    Ok(()) => {
                        self.failing.remove(&spec.network_id);
                        tracing::info!(network = %spec.network_id, namespace = %spec.namespace(), "metadata provisioned")
                    }
                    Err(e) => {
                        // Retried every second: said once per cause, not every time.
                        let why = e.to_string();
                        if self.failing.get(&spec.network_id) != Some(&why) {
                            tracing::warn!(network = %spec.network_id, "provisioning failed, will retry: {why}");
                            self.failing.insert(spec.network_id.clone(), why);
                        }
                        retry = true;
                    }
                },
                Action::Remove { network, why } => {
                    if why == Removal::Stale {
                        tracing::info!(namespace = %format!("{NAMESPACE_PREFIX}{network}"), "removing stale metadata namespace");
                    }
                    match self.plumber.remove(&network).await {
                        Ok(()) if why == Removal::Unneeded => {
                            tracing::info!(%network, "metadata removed: no VM port of the network is bound here")
                        }
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(%network, "removing the metadata namespace failed, will retry: {e}");
                            stale_failed |= why == Removal::Stale;
                            retry = true;
                        }
                    }
                }
            }
        }
        // The earlier run's namespaces are dealt with once a complete view
        // has been acted on.
        if listed && complete && view.chassis_uuid.is_some() && !stale_failed {
            self.cleanup_pending = false;
        }
        self.synced |= complete && view.chassis_uuid.is_some();
        let metrics = self.proxy.metrics();
        metrics.networks.set(self.plumber.networks().len() as i64);
        metrics.listeners.set(self.plumber.listeners() as i64);
        if let Ok(mut s) = self.status.write() {
            s.networks = self.plumber.specs();
            s.synced = self.synced;
            s.listeners_down = self.plumber.listeners_down();
            metrics.ready.set(i64::from(s.readiness().is_ok()));
        }
        retry
    }

    /// Provisioned networks.
    pub fn networks(&self) -> Vec<String> {
        self.plumber.networks()
    }

    /// Remove every namespace this agent provisioned (tests, `--cleanup`).
    pub async fn teardown_all(&mut self) {
        self.plumber.remove_all().await;
    }
}
