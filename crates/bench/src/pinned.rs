//! The pinned method of perf-method.md: the server under test on CPU 1,
//! `wrk -t1 -c32` on CPU 0, keep-alive, a 2 s warm-up, runs of 10 s, the
//! median run's req/s; the server's CPU from `/proc/PID/stat` before and
//! after each run (CPU per request), its RSS right after. Every wrk run is
//! bounded by its duration; a run that saw any non-2xx answer fails.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The core the server under test runs on.
pub const SERVER_CPU: &str = "1";
/// The core wrk runs on.
pub const LOAD_CPU: &str = "0";

/// How a server is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Method {
    pub connections: usize,
    pub seconds: u64,
    pub runs: usize,
    pub warmup_seconds: u64,
}

impl Default for Method {
    fn default() -> Self {
        Method {
            connections: 32,
            seconds: 10,
            runs: 3,
            warmup_seconds: 2,
        }
    }
}

/// One wrk run's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Server CPU per request.
    pub cpu_per_request: Duration,
}

/// wrk and taskset must be there; the message says how to get them.
pub fn check_tools() -> Result<()> {
    for (tool, package) in [("wrk", "wrk"), ("taskset", "util-linux")] {
        if !crate::measure::have(tool) {
            bail!("{tool} is needed for the pinned method: apt-get install {package}");
        }
    }
    Ok(())
}

/// A command pinned to the server's core.
pub fn pinned(program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", SERVER_CPU]).arg(program);
    command
}

/// A wrk script that adds `headers` to every request.
pub fn header_script(dir: &Path, name: &str, headers: &[(String, String)]) -> Result<PathBuf> {
    let mut lua = String::new();
    for (header, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{header}\"] = \"{value}\"\n"));
    }
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua)?;
    Ok(path)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let (_, rest) = stat.rsplit_once(')').context("odd /proc stat")?;
    Ok(rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum())
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Linux reports process CPU in ticks of 1/100 s (USER_HZ).
const TICK: Duration = Duration::from_millis(10);

fn wrk(url: &str, script: &Path, connections: usize, seconds: u64) -> Result<String> {
    let output = Command::new("taskset")
        .args(["-c", LOAD_CPU, "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("{url}: {}", line.trim());
    }
    Ok(text)
}

fn duration(value: &str) -> Option<Duration> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let micros = match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        _ => return None,
    };
    Some(Duration::from_nanos((micros * 1e3) as u64))
}

fn parse(text: &str) -> Result<(u64, f64, Duration, Duration)> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("wrk printed no request count")?;
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("wrk printed no Requests/sec")?;
    let p50 = field("50%").and_then(duration).context("no p50")?;
    let p99 = field("99%").and_then(duration).context("no p99")?;
    Ok((requests, rps, p50, p99))
}

/// Warm up, then `method.runs` measured runs against the server `pid`.
pub fn measure(pid: u32, url: &str, script: &Path, method: Method) -> Result<Vec<Run>> {
    wrk(url, script, method.connections, method.warmup_seconds)?;
    let mut runs = Vec::with_capacity(method.runs);
    for _ in 0..method.runs {
        runs.push(one_run(pid, url, script, method)?);
    }
    Ok(runs)
}

/// One measured run.
pub fn one_run(pid: u32, url: &str, script: &Path, method: Method) -> Result<Run> {
    let before = cpu_ticks(pid)?;
    let text = wrk(url, script, method.connections, method.seconds)?;
    let cpu = TICK * (cpu_ticks(pid)?.saturating_sub(before)) as u32;
    let (requests, requests_per_second, p50, p99) = parse(&text)?;
    Ok(Run {
        requests_per_second,
        p50,
        p99,
        cpu_per_request: cpu / requests.max(1) as u32,
    })
}

/// The median run by req/s.
pub fn median_run(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/x\n  1 threads and 32 connections\n  Latency Distribution\n     50%  248.00us\n     75%  300.00us\n     90%  400.00us\n     99%    1.02ms\n  1234567 requests in 10.00s, 1.23GB read\nRequests/sec: 123456.78\nTransfer/sec:     12.34MB\n";
        let (requests, rps, p50, p99) = parse(text).unwrap();
        assert_eq!(requests, 1_234_567);
        assert!((rps - 123_456.78).abs() < 0.01);
        assert_eq!(p50, Duration::from_micros(248));
        assert_eq!(p99, Duration::from_micros(1020));
    }
}
