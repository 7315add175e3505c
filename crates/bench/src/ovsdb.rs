//! `meta169-bench ovsdb`: time to read a Southbound snapshot of 5 MB and of
//! 50 MB off a real connection with meta169's OVSDB client (the first
//! message of a large Southbound is one such), against parsing the same
//! bytes once with serde_json (the floor) in the same run. Linear reading
//! keeps the 50 MB time within about ten times the 5 MB one.

use crate::measure::median;
use anyhow::{Context, Result};
use clap::Args;
use meta169_ovsdb::{Remote, Rpc};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(Args)]
pub struct OvsdbBenchArgs {
    /// Reads per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Snapshot sizes in MB.
    #[arg(long, value_delimiter = ',', default_value = "5,50")]
    sizes: Vec<usize>,
}

/// Longest wait for one snapshot to be read.
const READ_DEADLINE: Duration = Duration::from_secs(300);

/// An `update2` notification with Port_Binding rows adding up to about `bytes`.
fn snapshot(bytes: usize) -> Vec<u8> {
    let row = |i: usize| {
        json!({"initial": {
            "logical_port": format!("port-{i:08}"),
            "type": "",
            "mac": ["set", [format!("fa:16:3e:{:02x}:{:02x}:{:02x} 10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255, i >> 16 & 255, i >> 8 & 255, i & 255)]],
            "chassis": ["uuid", "6ca6d4c8-0f4e-4d54-8a07-7c21c7b5bd02"],
            "datapath": ["uuid", "0e4a7c3f-7c6b-4cf6-9d5d-0d8d7b8a9f10"],
            "external_ids": ["map", [["neutron:device_id", format!("{i:08x}-0000-4000-8000-000000000000")], ["neutron:project_id", "f7ac731cc11f40efbc03a9f9e1d1d21f"], ["neutron:cidrs", "10.0.0.5/24"]]]
        }})
    };
    let per_row = row(0).to_string().len() + 40;
    let rows: serde_json::Map<String, Value> = (0..bytes / per_row)
        .map(|i| (format!("{i:08x}-1111-4000-8000-000000000000"), row(i)))
        .collect();
    json!({"id": null, "method": "update2", "params": ["meta169", {"Port_Binding": rows}]})
        .to_string()
        .into_bytes()
}

/// One read of `message` through a UNIX socket: the time until the client
/// hands on the whole notification.
async fn read_once(dir: &std::path::Path, message: &[u8]) -> Result<Duration> {
    let path = dir.join("bench.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    let message = message.to_vec();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.write_all(&message).await?;
        // Held open until the client has read it all.
        tokio::time::sleep(READ_DEADLINE).await;
        anyhow::Ok(())
    });
    let remote: Remote = format!("unix:{}", path.display()).parse()?;
    let started = Instant::now();
    let (_rpc, mut notes) = Rpc::connect(&remote).await?;
    let note = tokio::time::timeout(READ_DEADLINE, notes.recv())
        .await
        .context("no snapshot within the deadline")?
        .context("the connection closed before the snapshot arrived")?;
    let elapsed = started.elapsed();
    server.abort();
    anyhow::ensure!(note.method == "update2", "got {}", note.method);
    Ok(elapsed)
}

pub async fn run(args: OvsdbBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let runs = args.runs.max(1);
    println!("meta169 bench ovsdb: a Southbound snapshot read off a UNIX socket by meta169's OVSDB client, median of {runs}");
    println!("baseline: serde_json parsing the same bytes once, in memory\n");
    println!(
        "{:>8} {:>12} {:>14} {:>16}",
        "MB", "read ms", "parse-once ms", "read / parse"
    );
    let mut reads = Vec::new();
    for &megabytes in &args.sizes {
        let message = snapshot(megabytes * 1024 * 1024);
        let mut read_ms = Vec::new();
        let mut parse_ms = Vec::new();
        for _ in 0..runs {
            read_ms.push(read_once(dir.path(), &message).await?.as_secs_f64() * 1e3);
            let started = Instant::now();
            let parsed: Value = serde_json::from_slice(&message)?;
            parse_ms.push(started.elapsed().as_secs_f64() * 1e3);
            drop(parsed);
        }
        let (read, parse) = (median(read_ms), median(parse_ms));
        println!(
            "{:>8.1} {:>12.1} {:>14.1} {:>16.2}",
            message.len() as f64 / (1024.0 * 1024.0),
            read,
            parse,
            read / parse
        );
        reads.push((megabytes, read, parse));
    }
    if let (Some((small, read_small, parse_small)), Some((large, read_large, parse_large))) =
        (reads.first(), reads.last())
    {
        if large > small {
            println!(
                "\n{large} MB / {small} MB read time: {:.1}x (sizes {:.0}x apart; parsing once: {:.1}x; linear reading stays near the sizes' ratio, within 12x for 5 and 50)",
                read_large / read_small,
                *large as f64 / *small as f64,
                parse_large / parse_small,
            );
        }
    }
    Ok(())
}
