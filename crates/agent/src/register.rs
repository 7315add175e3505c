//! Registration in Chassis_Private: the three `external_ids` keys
//! Neutron's server reads to list the agent and check it is alive (its id,
//! its bridge, and the last SB_Global nb_cfg it has seen). Only these keys
//! are ever written to the Southbound.

use crate::neutron::{metadata_agent_id, KEY_AGENT_ID, KEY_BRIDGE, KEY_SB_CFG};
use crate::sb::SbView;
use meta169_ovsdb::Monitor;
use serde_json::json;
use std::time::{Duration, Instant};

/// Keeps this chassis' registration current.
pub struct Registrar {
    chassis: String,
    bridge: String,
    max_delay: Duration,
    /// The nb_cfg to write and when: Neutron spreads these writes over a
    /// random delay so a cloud's agents do not all write at once.
    due: Option<(i64, Instant)>,
}

/// The keys to write to one Chassis_Private row.
#[derive(Clone, Debug, PartialEq)]
pub struct Writes {
    pub row: String,
    pub keys: Vec<(&'static str, String)>,
}

impl Registrar {
    pub fn new(chassis: &str, bridge: &str, max_delay: Duration) -> Registrar {
        Registrar {
            chassis: chassis.to_string(),
            bridge: bridge.to_string(),
            max_delay,
            due: None,
        }
    }

    /// When a delayed nb_cfg write is due, if one is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.map(|(_, at)| at)
    }

    /// What `view` calls for at `now`. The first nb_cfg is written at once;
    /// a later one after a random delay of up to `max_delay`.
    pub fn writes(&mut self, view: &SbView, now: Instant) -> Option<Writes> {
        let (row, ids, nb_cfg) = view.chassis_private.as_ref()?;
        let target_cfg = view.sb_nb_cfg.unwrap_or(*nb_cfg);
        let current_cfg = ids.get(KEY_SB_CFG).and_then(|v| v.parse::<i64>().ok());
        let mut keys = Vec::new();
        if !ids.contains_key(KEY_AGENT_ID) {
            keys.push((KEY_AGENT_ID, metadata_agent_id(&self.chassis)));
        }
        if ids.get(KEY_BRIDGE) != Some(&self.bridge) {
            keys.push((KEY_BRIDGE, self.bridge.clone()));
        }
        if current_cfg != Some(target_cfg) {
            let due = match self.due {
                Some((cfg, at)) if cfg == target_cfg => at,
                _ => {
                    let max = self.max_delay.as_millis() as u64;
                    let delay = if current_cfg.is_none() || max == 0 {
                        0
                    } else {
                        rand::random::<u64>() % max
                    };
                    let at = now + Duration::from_millis(delay);
                    self.due = Some((target_cfg, at));
                    at
                }
            };
            if now >= due {
                keys.push((KEY_SB_CFG, target_cfg.to_string()));
            }
        }
        (!keys.is_empty()).then(|| Writes {
            row: row.clone(),
            keys,
        })
    }

    /// Write what `view` calls for; a failure is logged and retried on the
    /// next pass.
    pub async fn register(&mut self, sb: &Monitor, view: &SbView) {
        let Some(writes) = self.writes(view, Instant::now()) else {
            return;
        };
        let names: Vec<&str> = writes.keys.iter().map(|(k, _)| *k).collect();
        let values =
            meta169_ovsdb::datum::string_map(writes.keys.iter().map(|(k, v)| (*k, v.as_str())));
        let op = json!({"op": "mutate", "table": "Chassis_Private",
        "where": [["_uuid", "==", ["uuid", writes.row]]],
        "mutations": [
            ["external_ids", "delete", ["set", names]],
            ["external_ids", "insert", values]
        ]});
        match sb.transact(vec![op]).await {
            Ok(_) => {
                if names.contains(&KEY_SB_CFG) {
                    self.due = None;
                }
                tracing::debug!(keys = ?writes.keys, "Chassis_Private updated");
            }
            Err(e) => tracing::warn!("registering in Chassis_Private failed (will retry): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn view(ids: &[(&str, &str)], sb_cfg: i64) -> SbView {
        let ids: HashMap<String, String> = ids
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SbView {
            chassis_private: Some(("row".into(), ids, 0)),
            sb_nb_cfg: Some(sb_cfg),
            ..SbView::default()
        }
    }

    #[test]
    fn the_first_registration_writes_every_key_at_once() {
        let mut r = Registrar::new("compute-1", "br-int", Duration::from_secs(3));
        let now = Instant::now();
        let w = r.writes(&view(&[], 5), now).unwrap();
        let keys: Vec<&str> = w.keys.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [KEY_AGENT_ID, KEY_BRIDGE, KEY_SB_CFG]);
        assert_eq!(w.keys[2].1, "5");
        let id = metadata_agent_id("compute-1");
        let done = view(
            &[
                (KEY_AGENT_ID, &id),
                (KEY_BRIDGE, "br-int"),
                (KEY_SB_CFG, "5"),
            ],
            5,
        );
        assert_eq!(r.writes(&done, now), None);
    }

    #[test]
    fn a_later_sb_cfg_waits_its_random_delay() {
        let mut r = Registrar::new("compute-1", "br-int", Duration::from_secs(3));
        let id = metadata_agent_id("compute-1");
        let behind = view(
            &[
                (KEY_AGENT_ID, &id),
                (KEY_BRIDGE, "br-int"),
                (KEY_SB_CFG, "5"),
            ],
            6,
        );
        let now = Instant::now();
        let first = r.writes(&behind, now);
        let due = r.next_due().unwrap();
        assert!(due <= now + Duration::from_secs(3));
        if due > now {
            assert_eq!(first, None);
        }
        let later = r.writes(&behind, now + Duration::from_secs(3)).unwrap();
        assert_eq!(later.keys, [(KEY_SB_CFG, "6".to_string())]);
    }
}
