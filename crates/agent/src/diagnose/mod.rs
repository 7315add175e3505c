//! `meta169 trace`: one guest's metadata path on this node, checked step
//! by step, each step saying whether it holds and what to do if not. The
//! Southbound rows are read with the reconcile loop's own helpers
//! ([`crate::sb::read`]), the node's plumbing with its own netlink and
//! OVSDB code, so trace and agent cannot disagree about what they see.

mod node;
mod services;
mod southbound;

use crate::settings::AgentSettings;
use std::net::IpAddr;
use std::time::Duration;

/// Time allowed to each database query and probe.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a step came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    Fails,
    /// Context, neither good nor bad.
    Note,
}

/// One checked step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub outcome: Outcome,
    pub what: String,
    /// What to do when it fails.
    pub fix: Option<String>,
}

impl Step {
    pub fn holds(what: impl Into<String>) -> Step {
        Step {
            outcome: Outcome::Holds,
            what: what.into(),
            fix: None,
        }
    }

    pub fn fails(what: impl Into<String>, fix: impl Into<String>) -> Step {
        Step {
            outcome: Outcome::Fails,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn note(what: impl Into<String>) -> Step {
        Step {
            outcome: Outcome::Note,
            what: what.into(),
            fix: None,
        }
    }
}

/// Every step of one guest's path, in order.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub steps: Vec<Step>,
}

impl Diagnosis {
    fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// How many steps fail.
    pub fn failures(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.outcome == Outcome::Fails)
            .count()
    }
}

/// Check the path of the guest at `ip` on `network` (a Neutron network id,
/// with or without the `neutron-` prefix).
pub async fn diagnose(settings: &AgentSettings, network: &str, ip: IpAddr) -> Diagnosis {
    let network = network.trim_start_matches("neutron-");
    let mut diagnosis = Diagnosis::default();
    let metadata_port = southbound::check(settings, network, ip, &mut diagnosis).await;
    node::check(settings, network, metadata_port.as_deref(), &mut diagnosis).await;
    services::check(settings, network, ip, &mut diagnosis).await;
    diagnosis
}
