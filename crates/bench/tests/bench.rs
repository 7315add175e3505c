//! The three benchmarks run end to end on small inputs, so they do not rot
//! between the runs that measure with them. Their figures are not checked
//! here: speed is read off `meta169 bench`, never asserted in tests.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_meta169");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("bench")
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
    let api = bench(&["api", "--requests", "300", "--rounds", "1"]);
    assert!(api.contains("worst ratio:"), "{api}");
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
}
