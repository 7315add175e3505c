//! What the agent asks the Southbound for: its own Chassis rows, SB_Global,
//! and through conditions that follow what it has read, the VM ports bound
//! here and the metadata ports and datapaths of their networks. A view is
//! complete once the replica reflects the conditions derived from it: only
//! then does the agent know everything this chassis needs.

use super::view::SbView;
use crate::neutron::namespace_of;
use meta169_ovsdb::{MonitorOptions, Replica, TableMonitor};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The Southbound database's name.
pub const SB_DB: &str = "OVN_Southbound";
const PORT_BINDING: &str = "Port_Binding";
const DATAPATH_BINDING: &str = "Datapath_Binding";

/// The tables, columns and first conditions the agent monitors.
pub fn monitor_options(chassis: &str) -> MonitorOptions {
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
            TableMonitor::all(PORT_BINDING)
                .columns(&[
                    "logical_port",
                    "type",
                    "chassis",
                    "additional_chassis",
                    "datapath",
                    "mac",
                    "external_ids",
                ])
                .when(Conditions::NOTHING.to_vec()),
            TableMonitor::all(DATAPATH_BINDING)
                .columns(&["external_ids"])
                .when(Conditions::NOTHING.to_vec()),
        ],
    )
}

/// The Port_Binding and Datapath_Binding conditions a view calls for.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions {
    pub port_binding: Vec<Value>,
    pub datapath_binding: Vec<Value>,
}

impl Conditions {
    /// No rows (before this chassis' Chassis row is known).
    const NOTHING: [Value; 1] = [Value::Bool(false)];

    /// The conditions the agent starts with.
    pub fn initial() -> Conditions {
        Conditions {
            port_binding: Self::NOTHING.to_vec(),
            datapath_binding: Self::NOTHING.to_vec(),
        }
    }

    /// What to monitor given what has been read: this chassis' bound ports,
    /// the metadata ports of their networks, and those networks' datapaths.
    pub fn for_view(view: &SbView) -> Conditions {
        let networks: BTreeSet<&String> = view
            .local_datapaths
            .values()
            .filter(|n| !n.is_empty())
            .collect();
        let port_binding = match view.chassis_uuid.as_deref() {
            None => Self::NOTHING.to_vec(),
            Some(me) => {
                let mut clauses = vec![
                    json!(["chassis", "==", ["uuid", me]]),
                    json!(["additional_chassis", "includes", ["set", [["uuid", me]]]]),
                ];
                // Neutron marks a network's metadata port with device_id
                // ovnmeta-<network>.
                clauses.extend(networks.iter().map(|network| {
                    json!([
                        "external_ids",
                        "includes",
                        ["map", [["neutron:device_id", namespace_of(network)]]]
                    ])
                }));
                clauses
            }
        };
        let datapath_binding = if view.local_datapaths.is_empty() {
            Self::NOTHING.to_vec()
        } else {
            view.local_datapaths
                .keys()
                .map(|uuid| json!(["_uuid", "==", ["uuid", uuid]]))
                .collect()
        };
        Conditions {
            port_binding,
            datapath_binding,
        }
    }

    /// Does the replica hold every row these conditions select?
    pub fn reflected_by(&self, replica: &Replica) -> bool {
        replica.reflects_conditions(PORT_BINDING, &self.port_binding)
            && replica.reflects_conditions(DATAPATH_BINDING, &self.datapath_binding)
    }

    /// The `(table, clauses)` changes that turn `self` into `wanted`.
    pub fn changes_to(&self, wanted: &Conditions) -> Vec<(&'static str, Vec<Value>)> {
        let mut changes = Vec::new();
        if self.port_binding != wanted.port_binding {
            changes.push((PORT_BINDING, wanted.port_binding.clone()));
        }
        if self.datapath_binding != wanted.datapath_binding {
            changes.push((DATAPATH_BINDING, wanted.datapath_binding.clone()));
        }
        changes
    }
}
