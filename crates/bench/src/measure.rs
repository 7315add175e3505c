//! What every benchmark measures with: a bounded keep-alive load loop,
//! percentiles and medians, CPU per thread, the bare hyper server that is
//! the baseline, child processes timed with their peak memory, and where
//! the `meta169` binary is.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One measured round of requests.
pub struct Round {
    pub requests_per_second: f64,
    /// Sorted.
    pub latencies: Vec<Duration>,
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The median of some values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `requests` GETs of `path` with `headers` over `connections` keep-alive
/// connections; every answer must be a 200 with a body.
pub async fn load(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    requests: usize,
    connections: usize,
) -> Result<Round> {
    let per_connection = requests.div_ceil(connections.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (path, headers) = (path.to_string(), headers.to_vec());
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let mut request =
                    http::Request::get(path.as_str()).header(http::header::HOST, "169.254.169.254");
                for (name, value) in &headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                let sent = Instant::now();
                let response = sender
                    .send_request(request.body(http_body_util::Empty::<Bytes>::new())?)
                    .await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status != http::StatusCode::OK || body.is_empty() {
                    bail!("{path} answered {status}");
                }
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(per_connection * connections);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.context("load task panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Round {
        requests_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

/// The baseline: hyper answering every request with the same fixed body.
pub async fn bare_server(listener: tokio::net::TcpListener, body: Bytes, content_type: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, content_type) = (body.clone(), content_type.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request: http::Request<Incoming>| {
                let response = http::Response::builder()
                    .header(http::header::CONTENT_TYPE, content_type.as_str())
                    .body(Full::new(body.clone()));
                async move { response }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Wall time and peak resident memory (KiB) of one child process.
pub fn measured(command: &mut std::process::Command) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on the pid of the child just spawned, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed (status {status})");
    }
    Ok((elapsed, usage.ru_maxrss as u64))
}

pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Median wall time and the largest peak memory over `runs` runs of `make`.
pub fn repeat(
    runs: usize,
    mut make: impl FnMut() -> Result<(Duration, u64)>,
) -> Result<(Duration, u64)> {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let (t, m) = make()?;
        times.push(t);
        peak = peak.max(m);
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], peak))
}

/// CPU time (user + system) of this process' threads, summed by thread
/// name, so a benchmark can say which party a request's cost falls on.
#[derive(Default)]
pub struct CpuByThread(std::collections::HashMap<String, u64>);

impl CpuByThread {
    pub fn now() -> CpuByThread {
        let mut by_name = std::collections::HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return CpuByThread(by_name);
        };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            // Fields after the parenthesised name: utime and stime are the
            // 12th and 13th of them.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ticks: u64 = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum();
            *by_name.entry(name.trim().to_string()).or_insert(0) += ticks;
        }
        CpuByThread(by_name)
    }

    pub fn add_since(&mut self, before: &CpuByThread) {
        for (name, ticks) in CpuByThread::now().0 {
            let earlier = before.0.get(&name).copied().unwrap_or(0);
            *self.0.entry(name).or_insert(0) += ticks.saturating_sub(earlier);
        }
    }

    /// Microseconds spent by threads called `name`.
    pub fn micros(&self, name: &str) -> f64 {
        // Linux reports these in clock ticks of 1/100 s (USER_HZ).
        self.0.get(name).copied().unwrap_or(0) as f64 * 10_000.0
    }
}

/// The `meta169` binary the benchmarks run (`configdrive`, `agent`): the
/// one beside this benchmark binary (cargo builds both into the same
/// directory), or `META169_BIN`.
pub fn meta169_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("META169_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark binary has no directory")?
            .join("meta169"),
    };
    if !path.exists() {
        bail!(
            "{} is missing: build it with the same profile (scripts/bench does), or set META169_BIN",
            path.display()
        );
    }
    Ok(path)
}
