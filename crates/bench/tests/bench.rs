//! Every benchmark runs end to end on small inputs, so none rots between
//! the runs that measure with it. Their figures are not checked here:
//! speed is read off `meta169-bench`, never asserted in tests. The
//! `meta169` binary they start is the workspace's, built beside this one.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_meta169-bench");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_benchmark_runs_on_small_inputs() {
    let api = bench(&["api", "--in-process", "--requests", "300", "--rounds", "1"]);
    assert!(api.contains("worst ratio:"), "{api}");
    // The pinned method (wrk, taskset; scripts/test installs them), one
    // short run per server and path, and its control.
    let pinned = bench(&["api", "--seconds", "1", "--runs", "1"]);
    for part in ["meta169", "ratio", "runs", "target >= 0.90"] {
        assert!(pinned.contains(part), "no {part:?} in:\n{pinned}");
    }
    let control = bench(&["api", "--seconds", "1", "--runs", "1", "--control"]);
    for part in ["control", "two identical servers"] {
        assert!(control.contains(part), "no {part:?} in:\n{control}");
    }
    let drive = bench(&["configdrive", "--runs", "1"]);
    assert!(drive.contains("genisoimage"), "{drive}");
    let agent = bench(&[
        "agent",
        "--requests",
        "500",
        "--bindings",
        "2",
        "--networks",
        "3",
        "--instances",
        "20",
        "--concurrency",
        "4",
    ]);
    for part in ["(a)", "(b)", "(c)", "(d)", "paired rounds", "per network"] {
        assert!(agent.contains(part), "no {part:?} in:\n{agent}");
    }
    assert!(agent.contains("; 0 failed)"), "{agent}");
    let crowd = bench(&["crowd", "--slow", "20", "--idle", "20", "--requests", "50"]);
    for part in ["(a)", "(b)", "among crowd", "40 connections opened"] {
        assert!(crowd.contains(part), "no {part:?} in:\n{crowd}");
    }
    let ovsdb = bench(&["ovsdb", "--sizes", "1,2", "--runs", "1"]);
    assert!(ovsdb.contains("2 MB / 1 MB read time"), "{ovsdb}");
    let limiter = bench(&["ratelimit", "--decisions", "20000"]);
    assert!(limiter.contains("full table"), "{limiter}");
}
