//! `meta169-bench ratelimit`: the cost of one admission decision of the
//! agent's per-guest rate limiter when its table is full and every request
//! comes from a new guest (a flood of distinct sources), against the same
//! decision for a few guests that are already tracked, in the same run.

use anyhow::Result;
use clap::Args;
use meta169_agent::ratelimit::{RateLimiter, MAX_TRACKED_GUESTS};
use meta169_agent::RateLimits;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct RateLimitBenchArgs {
    /// Decisions timed per case.
    #[arg(long, default_value_t = 200_000)]
    decisions: u32,
}

/// Guests in the "few known guests" baseline.
const KNOWN_GUESTS: u32 = 100;

fn guest(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// Nanoseconds per decision for guests `first..first + decisions`
/// (wrapping within `distinct`).
fn time(limiter: &RateLimiter, decisions: u32, first: u32, distinct: u32) -> f64 {
    let network: Arc<str> = Arc::from("bench");
    let start = Instant::now();
    let at = Instant::now();
    for i in 0..decisions {
        // One millisecond apart, so nobody is over the limit.
        let now = at + Duration::from_millis(u64::from(i));
        std::hint::black_box(limiter.admit(&network, guest(first + i % distinct), now));
    }
    start.elapsed().as_nanos() as f64 / f64::from(decisions)
}

pub fn run(args: RateLimitBenchArgs) -> Result<()> {
    let limits = RateLimits {
        base_limit: u32::MAX,
        burst_limit: u32::MAX,
        ..RateLimits::default()
    };
    let decisions = args.decisions.max(1);
    let known = RateLimiter::new(limits.clone());
    time(&known, KNOWN_GUESTS, 0, KNOWN_GUESTS);
    let baseline = time(&known, decisions, 0, KNOWN_GUESTS);
    let full = RateLimiter::new(limits);
    let table = MAX_TRACKED_GUESTS as u32;
    time(&full, table, 0, table);
    let flood = time(&full, decisions, table, u32::MAX - table);
    println!("meta169 bench ratelimit: {decisions} decisions per case\n");
    println!("    {KNOWN_GUESTS} known guests                {baseline:>8.0} ns per decision");
    println!("    full table ({table}), new guests  {flood:>8.0} ns per decision");
    println!(
        "    ratio {:.2} (full table with new guests / known guests)",
        flood / baseline
    );
    Ok(())
}
