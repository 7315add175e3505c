//! `update2` (and plain `update`) notifications applied to a replica of
//! the OVN Southbound tables the agent monitors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169_ovsdb::schema::Schema;
use meta169_ovsdb::Replica;
use std::sync::OnceLock;

/// The Southbound schema as recorded with the agent's fixtures.
const RECORDED: &str = include_str!("../../crates/agent/tests/fixtures/southbound/churn.json");

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let recorded: serde_json::Value =
            serde_json::from_str(RECORDED).expect("the fixture is JSON");
        Schema::from_json(&recorded["schema"])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, json)) = data.split_first() else {
        return;
    };
    let Ok(updates) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let mut replica = Replica::default();
    replica.apply_update(schema(), &updates, flags & 1 == 1);
    // Applying twice (a replayed notification) must hold as well.
    replica.apply_update(schema(), &updates, flags & 2 == 2);
});
