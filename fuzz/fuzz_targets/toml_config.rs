//! The configuration file as `meta169 serve` and `meta169 agent` read it:
//! parsed (unknown keys refused), then turned into the API's settings, the
//! listeners' limits and addresses and the agent's rate limits. Paths to
//! other files are dropped first: reading whatever files a fuzzed config
//! names is not what is under test.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meta169::config::{self, parse_addr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut file) = config::parse(text) else {
        return;
    };
    let serve = &mut file.serve;
    serve.identity.shared_secret_file = None;
    serve.vendordata.static_file = None;
    serve.tokens.key_file = None;
    let _ = serve.api_settings();
    let _ = serve.limits();
    for address in [&serve.listen, &serve.ops_listen, &serve.admin.listen] {
        let _ = parse_addr(address, "listen");
    }
    let agent = &file.agent;
    let _ = agent.rate_limit.limits();
    let _ = agent.rate_limit.or(&Default::default()).limits();
});
