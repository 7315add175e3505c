//! The reconcile loop's decision, as a pure function: from what the
//! Southbound says ([`SbView`]) and what exists on this node
//! ([`Existing`]) to a list of [`Action`]s. No I/O, so it is tested on
//! recorded Southbound payloads without root.

use crate::sb::{NetworkSpec, SbView};
use std::collections::{BTreeMap, BTreeSet};

/// What exists on this node, as far as planning needs to know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Existing {
    /// Networks of the `ovnmeta-` namespaces on the node, when they are to
    /// be cleaned up (at the agent's start: a previous run's, to adopt or
    /// remove); `None` afterwards.
    pub namespaces: Option<BTreeSet<String>>,
    /// What this agent has provisioned: the spec it used, and whether it is
    /// still intact (namespace present, outer veth end plugged).
    pub provisioned: BTreeMap<String, (NetworkSpec, bool)>,
}

/// Why a namespace is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Found at start and not needed (an earlier run's).
    Stale,
    /// Provisioned, and no VM port of the network is bound here any more.
    Unneeded,
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create or repair (or adopt) a network's namespace, veth, addresses,
    /// bridge port and listeners.
    Provision(NetworkSpec),
    /// Remove a network's namespace and veth.
    Remove { network: String, why: Removal },
}

/// What to do. `complete`: the view reflects every row this chassis needs
/// (the monitor has answered every condition derived from it).
///
/// Nothing is removed on a partial view: a restarted agent's first rounds,
/// before its ports and their networks have arrived, would remove the
/// namespaces guests are using. A network is provisioned as soon as it is
/// in the view, complete or not: it appears there only once its datapath,
/// its metadata port and every VM port bound here have arrived (those come
/// with this chassis' own condition), so its spec is whole; waiting for
/// completeness would hold back every new network while others keep
/// arriving, in the boot storms when guests need them most.
pub fn plan(view: &SbView, complete: bool, existing: &Existing) -> Vec<Action> {
    // Without our Chassis row nothing can be known to be bound here;
    // acting now would cut guests off during an ovn-controller restart.
    if view.chassis_uuid.is_none() {
        return Vec::new();
    }
    let mut actions = Vec::new();
    if let (true, Some(namespaces)) = (complete, &existing.namespaces) {
        actions.extend(
            namespaces
                .iter()
                .filter(|n| {
                    !view.networks.contains_key(*n) && !existing.provisioned.contains_key(*n)
                })
                .map(|network| Action::Remove {
                    network: network.clone(),
                    why: Removal::Stale,
                }),
        );
    }
    for (network, spec) in &view.networks {
        let up_to_date = existing
            .provisioned
            .get(network)
            .is_some_and(|(provisioned, intact)| provisioned == spec && *intact);
        if !up_to_date {
            actions.push(Action::Provision(spec.clone()));
        }
    }
    if !complete {
        return actions;
    }
    actions.extend(
        existing
            .provisioned
            .keys()
            .filter(|n| !view.networks.contains_key(*n))
            .map(|network| Action::Remove {
                network: network.clone(),
                why: Removal::Unneeded,
            }),
    );
    actions
}
