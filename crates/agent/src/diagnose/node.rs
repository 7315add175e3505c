//! This node's part: the namespace, the inner veth end and its addresses,
//! the outer end on the bridge, and a listener on 169.254.169.254:80.

use super::{Diagnosis, Step, QUERY_TIMEOUT};
use crate::net::Net;
use crate::neutron::{namespace_of, veth_names, METADATA_PORT, METADATA_V4};
use crate::settings::{AgentSettings, BridgeMode};
use crate::{netns, ovs};
use meta169_ovsdb::{Datum, Rpc};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time allowed to connect to the namespace's listener.
const LISTENER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The inner end's state, as a step.
pub fn link_state(ns: &str, inner: &str, up: bool) -> Step {
    if up {
        Step::holds(format!("{inner} is up in {ns}"))
    } else {
        Step::fails(
            format!("{inner} is down in {ns}"),
            format!("ip -n {ns} link set {inner} up, and check the agent's log"),
        )
    }
}

pub async fn check(
    settings: &AgentSettings,
    network: &str,
    metadata_port: Option<&str>,
    diagnosis: &mut Diagnosis,
) {
    let ns = namespace_of(network);
    if !netns::exists(&ns) {
        diagnosis.push(Step::fails(
            format!("namespace {ns} does not exist"),
            "is meta169 agent running here? Its log says why it did not provision the network",
        ));
        return;
    }
    diagnosis.push(Step::holds(format!("namespace {ns} exists")));
    inner_end(&ns, network, diagnosis).await;
    outer_end(settings, network, metadata_port, diagnosis).await;
    let listening = netns::run_in(&ns, || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from((METADATA_V4, METADATA_PORT)),
            LISTENER_PROBE_TIMEOUT,
        )
        .map(|_| ())
    });
    diagnosis.push(match listening {
        Ok(()) => Step::holds(format!("something listens on 169.254.169.254:80 in {ns}")),
        Err(e) => Step::fails(
            format!("nothing answers on 169.254.169.254:80 in {ns}: {e}"),
            "is meta169 agent running? (haproxy sites: is haproxy running in the namespace?)",
        ),
    });
}

async fn inner_end(ns: &str, network: &str, diagnosis: &mut Diagnosis) {
    let (_, inner) = veth_names(network);
    let inside = match Net::inside(ns) {
        Ok(inside) => inside,
        Err(e) => {
            diagnosis.push(Step::fails(
                format!("cannot enter {ns}: {e}"),
                "run trace as root",
            ));
            return;
        }
    };
    let link = match inside.link(&inner).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            diagnosis.push(Step::fails(
                format!("{inner} is missing in {ns}"),
                "restart meta169 agent; it recreates the veth",
            ));
            return;
        }
        Err(e) => {
            diagnosis.push(Step::fails(
                format!("reading {inner} in {ns}: {e}"),
                "run trace as root",
            ));
            return;
        }
    };
    diagnosis.push(link_state(ns, &inner, link.up));
    let addresses = inside.addresses(link.index).await.unwrap_or_default();
    if addresses
        .iter()
        .any(|(ip, p)| *ip == IpAddr::V4(METADATA_V4) && *p == 32)
    {
        diagnosis.push(Step::holds(format!("{inner} has 169.254.169.254/32")));
    } else {
        diagnosis.push(Step::fails(
            format!("{inner} lacks 169.254.169.254/32"),
            "restart meta169 agent",
        ));
    }
    let listed: Vec<String> = addresses
        .iter()
        .map(|(ip, p)| format!("{ip}/{p}"))
        .collect();
    diagnosis.push(Step::note(format!("addresses: {}", listed.join(" "))));
}

async fn outer_end(
    settings: &AgentSettings,
    network: &str,
    metadata_port: Option<&str>,
    diagnosis: &mut Diagnosis,
) {
    let (outer, _) = veth_names(network);
    match &settings.bridge {
        BridgeMode::Linux(name) => {
            let plugged = match Net::root() {
                Ok(root) => match (root.link(name).await, root.link(&outer).await) {
                    (Ok(Some(bridge)), Ok(Some(port))) => port.controller == Some(bridge.index),
                    _ => false,
                },
                Err(_) => false,
            };
            diagnosis.push(if plugged {
                Step::holds(format!("{outer} is a port of Linux bridge {name}"))
            } else {
                Step::fails(
                    format!("{outer} is not plugged into Linux bridge {name}"),
                    "restart meta169 agent, or check --bridge",
                )
            });
        }
        BridgeMode::Ovs(_) => {
            let rpc = match Rpc::connect(&settings.ovs).await {
                Ok((rpc, _)) => rpc,
                Err(e) => {
                    diagnosis.push(Step::fails(
                        format!("local Open_vSwitch database at {}: {e}", settings.ovs),
                        "check [ovs] ovsdb_connection / --ovs-db",
                    ));
                    return;
                }
            };
            let select =
                json!({"op": "select", "table": "Interface", "where": [["name", "==", outer]]});
            let rows = rpc
                .transact(ovs::DB, vec![select], QUERY_TIMEOUT)
                .await
                .unwrap_or_default();
            let iface_id = rows
                .first()
                .and_then(|r| r["rows"].as_array())
                .and_then(|rows| rows.first())
                .map(|row| {
                    Datum::from_wire(&row["external_ids"])
                        .string_map()
                        .get("iface-id")
                        .cloned()
                });
            diagnosis.push(match (iface_id, metadata_port) {
                (Some(Some(id)), Some(port)) if id == port => {
                    Step::holds(format!("{outer} is on OVS with iface-id {id}"))
                }
                (Some(id), _) => Step::fails(
                    format!("{outer} has iface-id {id:?}, expected {metadata_port:?}"),
                    "restart meta169 agent",
                ),
                (None, _) => Step::fails(
                    format!("{outer} is not an OVS interface"),
                    "restart meta169 agent; check the integration bridge exists",
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Outcome;

    #[test]
    fn a_down_link_names_the_command_that_brings_it_up() {
        let step = link_state("ovnmeta-n1", "tapn1-abcdef1", false);
        assert_eq!(step.outcome, Outcome::Fails);
        assert_eq!(
            step.fix.as_deref(),
            Some("ip -n ovnmeta-n1 link set tapn1-abcdef1 up, and check the agent's log")
        );
        assert_eq!(link_state("ovnmeta-n1", "t1", true).outcome, Outcome::Holds);
    }
}
