//! `meta169-bench agent`: the agent measured against baselines in the
//! same run. Needs root, ovsdb-server and the OVN schemas (scripts/test
//! installs them). Every loop is bounded by a count and a deadline.
//!
//! (a) requests through the agent's proxy vs straight to the API ([`proxy`]);
//! (b) time from a VM port bound to this chassis to its first answer, and
//! (c) agent memory with 1, 100 and 1,000 provisioned networks ([`nodes`]);
//! (d) a boot storm: many instances, each cloud-init's 29 requests on
//!     fresh connections through the agent, vs a bare hyper server ([`storm`]).

mod nodes;
mod proxy;
pub(crate) mod rig;
mod storm;

use anyhow::{bail, Result};
use clap::Args;
use meta169_api::{metadata_handler, ApiSettings, MetadataService, ServerLimits};
use meta169_store::{SqliteStore, Store};
use std::sync::Arc;

#[derive(Args)]
pub struct AgentBenchArgs {
    /// Requests per round in (a).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Port bindings timed in (b).
    #[arg(long, default_value_t = 20)]
    bindings: usize,
    /// Largest network count in (c) (1, 100 and this).
    #[arg(long, default_value_t = 1000)]
    networks: usize,
    /// Instances in the boot storm (d).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Concurrent instances booting in (d).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Which parts to run (a, b, c, d).
    #[arg(long, default_value = "abcd")]
    parts: String,
}

pub(crate) const SECRET: &str = "bench-secret";
pub(crate) const CHASSIS: &str = "bench-chassis";

/// A metadata API in signed mode on loopback, with `count` instances `inst-N`.
pub(crate) async fn start_api(count: usize) -> Result<(String, Arc<MetadataService>)> {
    let mut settings = ApiSettings::default();
    settings.identity.shared_secret = SECRET.as_bytes().to_vec();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
    for n in 0..count {
        let mut i = meta169_tree::example_instance();
        i.uuid = format!("inst-{n}");
        i.project_id = "bench".into();
        i.ports.clear();
        store.put_instance(&i).await?;
    }
    let limits = meta169_api::metadata_listener_limits(&settings, ServerLimits::default());
    let service = Arc::new(MetadataService::new(store, settings, limits.clone())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(meta169_api::server::serve_direct(
        listener,
        metadata_handler(service.clone()),
        limits,
        std::future::pending(),
    ));
    Ok((url, service))
}

pub async fn run(args: AgentBenchArgs) -> Result<()> {
    if !meta169_testkit::is_root() {
        bail!("meta169 bench agent needs root (namespaces, veths)");
    }
    println!("meta169 bench agent\n");
    if args.parts.contains('a') {
        proxy::run(args.requests).await?;
    }
    if args.parts.contains('b') {
        nodes::bind_to_answer(args.bindings).await?;
    }
    if args.parts.contains('c') {
        nodes::memory(args.networks).await?;
    }
    if args.parts.contains('d') {
        storm::run(args.instances, args.concurrency).await?;
    }
    Ok(())
}
