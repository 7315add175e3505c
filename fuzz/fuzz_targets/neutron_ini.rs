//! An existing `neutron_ovn_metadata_agent.ini` as `meta169 agent
//! --neutron-config` reads it: the keys meta169 understands, the upstream
//! URL built from them, and the rate limits they set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169::config::neutron_ini::parse_neutron_ini;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ini) = parse_neutron_ini(text, "fuzzed.ini") else {
        return;
    };
    let _ = ini.rate_limit.limits();
});
