//! `meta169 trace`: one VM's metadata path on this node, step by step
//! (the checks are the agent crate's `diagnose`), printed with what to do
//! where a step fails.

use crate::agent::{settings, AgentArgs};
use anyhow::Result;
use clap::Args;
use meta169_agent::diagnose::{diagnose, Outcome};
use std::net::IpAddr;

#[derive(Args)]
pub struct TraceArgs {
    /// The Neutron network id (the part after neutron- in the logical switch name).
    #[arg(long)]
    network: String,
    /// The VM's address on that network.
    #[arg(long)]
    ip: IpAddr,
    #[command(flatten)]
    agent: AgentArgs,
}

pub async fn run(args: TraceArgs) -> Result<()> {
    let settings = settings(&args.agent)?;
    let network = args.network.trim_start_matches("neutron-");
    println!("meta169 trace: network {network}, address {}\n", args.ip);
    let diagnosis = diagnose(&settings, network, args.ip).await;
    for step in &diagnosis.steps {
        match step.outcome {
            Outcome::Holds => println!("[ ok ] {}", step.what),
            Outcome::Note => println!("[info] {}", step.what),
            Outcome::Fails => {
                println!("[FAIL] {}", step.what);
                if let Some(fix) = &step.fix {
                    println!("       -> {fix}");
                }
            }
        }
    }
    println!();
    match diagnosis.failures() {
        0 => {
            println!("every step holds");
            Ok(())
        }
        failures => anyhow::bail!("{failures} step(s) failed"),
    }
}
