//! Carrying out the plan: namespaces, veths, MAC, MTU and addresses over
//! netlink, the outer end into the integration bridge (OVS over OVSDB, or
//! a Linux bridge), and the namespace's listeners. Idempotent: provisioning
//! what exists adopts it (a restarted agent keeps the namespace and veth
//! guests are using) and repairs what is missing.

use crate::error::AgentError;
use crate::listeners::listen_in;
use crate::net::{Link, Net};
use crate::neutron::{namespace_of, veth_names, METADATA_PORT, METADATA_V4, METADATA_V6};
use crate::proxy::Proxy;
use crate::sb::NetworkSpec;
use crate::settings::BridgeMode;
use crate::{netns, ovs};
use meta169_http::ServerLimits;
use meta169_ovsdb::Monitor;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A network this agent has provisioned.
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
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Where the outer veth ends go, resolved.
pub struct Bridge {
    pub mode: BridgeMode,
    /// The bridge's name.
    pub name: String,
    /// The local Open_vSwitch database (OVS mode).
    pub ovs: Option<Monitor>,
}

/// Does the plumbing, and remembers what it did.
pub struct Plumber {
    root: Net,
    bridge: Bridge,
    proxy: Arc<Proxy>,
    limits: ServerLimits,
    ipv6: bool,
    provisioned: HashMap<String, Provisioned>,
}

/// Run blocking namespace work off the runtime's thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(AgentError::task)?
        .map_err(AgentError::Netlink)
}

impl Plumber {
    pub fn new(
        bridge: Bridge,
        proxy: Arc<Proxy>,
        limits: ServerLimits,
        ipv6: bool,
    ) -> Result<Plumber, AgentError> {
        Ok(Plumber {
            root: Net::root().map_err(AgentError::Netlink)?,
            bridge,
            proxy,
            limits,
            ipv6,
            provisioned: HashMap::new(),
        })
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// What is provisioned, and whether each is still intact (namespace
    /// present, outer end plugged): the plan's view of this node.
    pub fn provisioned(&self) -> BTreeMap<String, (NetworkSpec, bool)> {
        self.provisioned
            .iter()
            .map(|(network, p)| {
                let intact = netns::exists(&p.spec.namespace()) && self.is_plugged(&p.spec);
                (network.clone(), (p.spec.clone(), intact))
            })
            .collect()
    }

    /// The spec each provisioned network was provisioned with.
    pub fn specs(&self) -> BTreeMap<String, NetworkSpec> {
        self.provisioned
            .iter()
            .map(|(network, p)| (network.clone(), p.spec.clone()))
            .collect()
    }

    /// Networks whose listeners have stopped (a bug, or a socket error).
    pub fn listeners_down(&self) -> Vec<String> {
        let mut down: Vec<String> = self
            .provisioned
            .iter()
            .filter(|(_, p)| p.listeners.is_empty() || p.listeners.iter().any(|l| l.is_finished()))
            .map(|(network, _)| network.clone())
            .collect();
        down.sort();
        down
    }

    /// Listeners serving now.
    pub fn listeners(&self) -> usize {
        self.provisioned
            .values()
            .flat_map(|p| &p.listeners)
            .filter(|l| !l.is_finished())
            .count()
    }

    /// Provisioned networks.
    pub fn networks(&self) -> Vec<String> {
        let mut networks: Vec<String> = self.provisioned.keys().cloned().collect();
        networks.sort();
        networks
    }

    fn ovs(&self) -> Option<&Monitor> {
        match self.bridge.mode {
            BridgeMode::Ovs(_) => self.bridge.ovs.as_ref(),
            BridgeMode::Linux(_) => None,
        }
    }

    /// With OVS, is the outer end on the bridge with the metadata port's iface-id?
    fn is_plugged(&self, spec: &NetworkSpec) -> bool {
        let Some(monitor) = self.ovs() else {
            return true;
        };
        let (outer, _) = spec.veth_names();
        ovs::is_plugged(
            &monitor.replica(),
            &self.bridge.name,
            &outer,
            &spec.metadata.logical_port,
        )
    }

    /// Is the integration bridge on OVS's userspace (netdev) datapath?
    fn userspace_datapath(&self) -> bool {
        self.ovs().is_some_and(|monitor| {
            ovs::datapath_type(&monitor.replica(), &self.bridge.name).as_deref() == Some("netdev")
        })
    }

    /// Create, adopt or repair everything `spec` needs.
    pub async fn provision(&mut self, spec: &NetworkSpec) -> Result<(), AgentError> {
        let ns = spec.namespace();
        let ns_name = ns.clone();
        let created = tokio::task::spawn_blocking(move || netns::create(&ns_name))
            .await
            .map_err(AgentError::task)?
            .map_err(|e| AgentError::io(format!("creating namespace {ns}"), e))?;
        if created {
            self.proxy.metrics().namespaces_created.inc();
        }
        let ns_name = ns.clone();
        let inside = blocking(move || Net::inside(&ns_name)).await?;
        let (inner_link, outer_link) = self.veth(spec, &inside).await?;
        let mtu = spec.metadata.mtu;
        inside
            .configure(inner_link.index, Some(spec.metadata.mac), mtu)
            .await?;
        if let Some(lo) = inside.link("lo").await? {
            inside.configure(lo.index, None, 0).await?;
        }
        self.root.configure(outer_link.index, None, mtu).await?;
        if self.userspace_datapath() {
            let (ns, inner) = (ns.clone(), inner_link.name.clone());
            blocking(move || netns::run_in(&ns, move || crate::net::disable_tx_checksum(&inner)))
                .await?;
        }
        let wanted = spec.addresses(self.ipv6);
        set_addresses(&inside, inner_link.index, &wanted).await?;
        self.attach(spec, &outer_link).await?;
        let v6 = wanted.iter().any(|(ip, _)| ip.is_ipv6());
        let listeners = match self.provisioned.remove(&spec.network_id) {
            Some(mut p)
                if p.v6 == v6
                    && p.inner_index == inner_link.index
                    && !p.listeners.is_empty()
                    && p.listeners.iter().all(|l| !l.is_finished()) =>
            {
                std::mem::take(&mut p.listeners)
            }
            _ => self.listen(spec, &ns, v6, inner_link.index).await?,
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

    /// The veth pair (inner, outer), created if the inner end is missing.
    async fn veth(&self, spec: &NetworkSpec, inside: &Net) -> Result<(Link, Link), AgentError> {
        let ns = spec.namespace();
        let (outer, inner) = spec.veth_names();
        let inner_link = match inside.link(&inner).await? {
            Some(link) => link,
            None => {
                if let Some(stale) = self.root.link(&outer).await? {
                    self.root.delete_link(stale.index).await?;
                }
                self.root.add_veth_into(&outer, &inner, &ns).await?;
                inside.link(&inner).await?.ok_or_else(|| {
                    AgentError::Netlink(std::io::Error::other(format!(
                        "{inner} did not appear in {ns}"
                    )))
                })?
            }
        };
        let outer_link = self.root.link(&outer).await?.ok_or_else(|| {
            AgentError::Netlink(std::io::Error::other(format!("{outer} is missing")))
        })?;
        Ok((inner_link, outer_link))
    }

    /// Put the outer end on the bridge.
    async fn attach(&self, spec: &NetworkSpec, outer_link: &Link) -> Result<(), AgentError> {
        let (outer, _) = spec.veth_names();
        if let Some(monitor) = self.ovs() {
            return ovs::plug(
                monitor,
                &self.bridge.name,
                &outer,
                &spec.metadata.logical_port,
            )
            .await
            .map_err(|e| AgentError::Database {
                what: format!("plugging {outer} into {}", self.bridge.name),
                reason: e.to_string(),
            });
        }
        let bridge = self.root.link(&self.bridge.name).await?.ok_or_else(|| {
            AgentError::Config(format!(
                "Linux bridge {} does not exist; create it or fix --bridge",
                self.bridge.name
            ))
        })?;
        if outer_link.controller != Some(bridge.index) {
            self.root
                .set_controller(outer_link.index, bridge.index)
                .await?;
        }
        Ok(())
    }

    /// Open the namespace's listeners.
    async fn listen(
        &self,
        spec: &NetworkSpec,
        ns: &str,
        v6: bool,
        inner_index: u32,
    ) -> Result<Vec<JoinHandle<()>>, AgentError> {
        let mut addresses = vec![SocketAddr::from((METADATA_V4, METADATA_PORT))];
        if v6 {
            addresses.push(SocketAddr::V6(SocketAddrV6::new(
                METADATA_V6,
                METADATA_PORT,
                0,
                inner_index,
            )));
        }
        let mut listeners = Vec::new();
        for address in addresses {
            listeners.push(
                listen_in(
                    ns,
                    address,
                    self.proxy.clone(),
                    &spec.network_id,
                    self.limits.clone(),
                )
                .await?,
            );
        }
        Ok(listeners)
    }

    /// Remove a network's listeners, bridge port, veth and namespace.
    pub async fn remove(&mut self, network: &str) -> Result<(), AgentError> {
        self.provisioned.remove(network);
        let (outer, _) = veth_names(network);
        if let Some(monitor) = self.ovs() {
            ovs::unplug(monitor, &outer)
                .await
                .map_err(|e| AgentError::Database {
                    what: format!("unplugging {outer}"),
                    reason: e.to_string(),
                })?;
        }
        if let Some(link) = self.root.link(&outer).await? {
            self.root.delete_link(link.index).await?;
        }
        let ns = namespace_of(network);
        blocking(move || netns::delete(&ns)).await?;
        self.proxy.metrics().namespaces_removed.inc();
        self.proxy.metrics().forget_network(network);
        Ok(())
    }

    /// Remove every network this agent provisioned (tests, `--cleanup`).
    pub async fn remove_all(&mut self) {
        for network in self.networks() {
            if let Err(e) = self.remove(&network).await {
                tracing::warn!(%network, "removing failed: {e}");
            }
        }
    }
}

/// Make the link's addresses exactly `wanted`.
async fn set_addresses(
    inside: &Net,
    index: u32,
    wanted: &[(IpAddr, u8)],
) -> Result<(), AgentError> {
    let current = inside.addresses(index).await?;
    for (ip, prefix) in wanted {
        if !current.contains(&(*ip, *prefix)) {
            inside.add_address(index, *ip, *prefix).await?;
        }
    }
    for (ip, prefix) in &current {
        if !wanted.contains(&(*ip, *prefix)) {
            inside.delete_address(index, *ip, *prefix).await?;
        }
    }
    Ok(())
}
