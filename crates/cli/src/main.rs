//! `meta169`: the cloud instance metadata service. One binary: the metadata
//! API (`serve`), the per-node OVN agent (`agent`, `trace`), instance
//! records (`instance`) and config drives (`configdrive`). This crate
//! parses arguments, loads configuration and wires the crates together;
//! the benchmarks are `meta169-bench` (crates/bench).

mod agent;
mod configdrive;
mod fd_limit;
mod instance;
mod logging;
mod ops;
mod serve;
mod signals;
mod trace;

use anyhow::Result;
use clap::{Parser, Subcommand};
use meta169::config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meta169",
    version,
    about = "Cloud instance metadata service, compatible with OpenStack Nova and Neutron"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written (to stderr; `RUST_LOG` chooses what is logged).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "META169_LOG_FORMAT"
    )]
    log_format: logging::LogFormat,
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
        /// Configuration file (its [serve] store is used) [default: /etc/meta169/meta169.toml if it exists].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Store URL; overrides the configuration file.
        #[arg(long, global = true)]
        store: Option<String>,
    },
    /// Write an instance's config drive (ISO 9660 or VFAT, label config-2).
    Configdrive(configdrive::ConfigDriveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One message with its causes, never a backtrace: what was
            // wrong and what to do is in the message.
            eprintln!("meta169: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    let runtime = match command {
        Command::Agent(_) => meta169_agent::runtime()?,
        Command::Serve(_) => serve::runtime()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match command {
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
