//! `meta169`: the cloud instance metadata service. One binary: the metadata
//! API (`serve`), the per-node OVN agent (`agent`, `trace`), instance
//! records (`instance`) and config drives (`configdrive`). This crate
//! parses arguments, loads configuration and wires the crates together;
//! the benchmarks are `meta169-bench` (crates/bench).

mod agent;
mod config;
mod configdrive;
mod instance;
mod serve;
mod signals;
mod trace;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "meta169",
    version,
    about = "Cloud instance metadata service, compatible with OpenStack Nova and Neutron"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the metadata API (Nova-compatible paths, EC2 tree, password, vendor data).
    Serve(serve::ServeArgs),
    /// The per-compute-node OVN metadata agent (replaces neutron-ovn-metadata-agent).
    Agent(agent::AgentArgs),
    /// Explain one VM's metadata path on this node, step by step.
    Trace(trace::TraceArgs),
    /// Manage instance records in the store.
    Instance {
        #[command(subcommand)]
        command: instance::InstanceCommand,
        /// Configuration file (its [serve] store is used).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Store URL; overrides the configuration file.
        #[arg(long, global = true)]
        store: Option<String>,
    },
    /// Write an instance's config drive (ISO 9660 or VFAT, label config-2).
    Configdrive(configdrive::ConfigDriveArgs),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = match cli.command {
        Command::Agent(_) => meta169_agent::runtime()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Trace(args) => trace::run(args).await,
            Command::Instance {
                command,
                config,
                store,
            } => instance::run(command, config, store).await,
            Command::Configdrive(args) => configdrive::run(args).await,
        }
    })
}
