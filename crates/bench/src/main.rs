//! `meta169-bench`: meta169 measured next to a baseline in the same run on
//! the same machine, printed as ratios because these machines are noisy
//! (see perf-method.md). A tool for developers, not part of the product:
//! it starts real components through the tests' own helper.

mod agent;
mod api;
mod cache;
mod configdrive;
mod crowd;
mod measure;
mod ovsdb;
mod pinned;
mod ratelimit;
mod serve_process;
mod store;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meta169-bench",
    about = "Measure meta169 against a baseline in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The metadata API vs a bare hyper server returning a body of the same size.
    Api(api::ApiBenchArgs),
    /// RSS of meta169 serve per cached instance, at 1k, 10k and 100k instances.
    Cache(cache::CacheBenchArgs),
    /// meta169 serve over SQLite and over PostgreSQL: cache hits and misses.
    Store(store::StoreBenchArgs),
    /// Config-drive images (64 KiB user data, 100 injected files) vs
    /// genisoimage / mkfs.vfat + mcopy, the tools Nova runs.
    Configdrive(configdrive::ConfigDriveBenchArgs),
    /// The agent: proxy overhead, bind-to-answer time, memory per network,
    /// and a boot storm, each against a baseline (needs root and OVN's packages).
    Agent(agent::AgentBenchArgs),
    /// Reading Southbound snapshots of 5 and 50 MB off an OVSDB connection.
    Ovsdb(ovsdb::OvsdbBenchArgs),
    /// The per-guest rate limiter's cost with a full table of guests.
    Ratelimit(ratelimit::RateLimitBenchArgs),
    /// A guest's latency among 1,000 slow and 1,000 idle clients, against
    /// the guest alone: serve, and one of the agent's namespace listeners.
    Crowd(crowd::CrowdBenchArgs),
    /// The baseline server of the pinned method, as its own process.
    #[command(hide = true)]
    BareServer(BareServerArgs),
}

#[derive(clap::Args)]
struct BareServerArgs {
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long)]
    body_file: std::path::PathBuf,
    #[arg(long)]
    content_type: String,
}

/// perf-method.md's baseline: hyper on a current-thread runtime.
fn bare_server(args: BareServerArgs) -> Result<()> {
    let body = bytes::Bytes::from(std::fs::read(&args.body_file)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            measure::bare_server(listener, body, args.content_type).await;
            anyhow::Ok(())
        })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = match cli.command {
        Command::BareServer(args) => return bare_server(args),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Api(args) => api::run(args).await,
            Command::Cache(args) => cache::run(args).await,
            Command::Store(args) => store::run(args).await,
            Command::Configdrive(args) => configdrive::run(args),
            Command::Agent(args) => agent::run(args).await,
            Command::Crowd(args) => crowd::run(args).await,
            Command::Ovsdb(args) => ovsdb::run(args).await,
            Command::Ratelimit(args) => ratelimit::run(args),
            Command::BareServer(_) => unreachable!("handled above"),
        }
    })
}
