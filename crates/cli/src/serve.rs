//! `meta169 serve`: the metadata API and its admin side.

use crate::config::{self, parse_addr};
use crate::fd_limit;
use crate::ops;
use anyhow::{Context, Result};
use clap::Args;
use meta169_api::{admin, metadata_handler, metadata_listener_limits, server, MetadataService};
use meta169_http::ops::ReadyCheck;
use meta169_store::Store;
use rand::RngCore;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (TOML; see docs/meta169.example.toml) [default: /etc/meta169/meta169.toml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address for the metadata API [default: 0.0.0.0:8775].
    #[arg(long)]
    listen: Option<String>,
    /// Address for the admin API [default: 127.0.0.1:8776].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Address for /metrics, /healthz and /readyz; "" for none [default: 127.0.0.1:8777].
    #[arg(long)]
    ops_listen: Option<String>,
    /// Store URL [default: sqlite:///var/lib/meta169/meta169.db].
    #[arg(long)]
    store: Option<String>,
    /// Try it out: a throw-away store with one example instance bound to
    /// 127.0.0.1, identified by source address, on 127.0.0.1:8775. Never
    /// written into a real store.
    #[arg(long, conflicts_with = "store")]
    demo: bool,
}

/// How long an idle thread of the blocking pool (store reads and writes)
/// stays when serving on one thread. While a process has a second
/// thread, the kernel takes and drops a reference on a socket's file in
/// every send and receive, which it skips for a process of one; with
/// tokio's default of 10 s, each store read left a cached answer that
/// much dearer for 10 s after it. A thread made anew costs tens of
/// microseconds, once per burst of store reads more than this apart.
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(100);

/// The runtime serve runs on. Given one CPU (an affinity mask or a
/// cgroup quota of one), a current-thread runtime: there is no other
/// worker to hand work to, and the multi-thread scheduler's bookkeeping
/// and wake-ups are pure overhead on a cached request. Otherwise one
/// worker per CPU.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cpus == 1 {
        tracing::info!("one CPU available: serving on a single thread");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let file = config::load(args.config.as_deref())?;
    let mut section = file.serve;
    if args.demo {
        section.store = "sqlite::memory:".into();
        section.listen = "127.0.0.1:8775".into();
        section.identity.by_source = true;
        section.identity.signed = false;
        section.identity.by_address = false;
    }
    if let Some(listen) = args.listen {
        section.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        section.admin.listen = admin;
    }
    if let Some(ops) = args.ops_listen {
        section.ops_listen = ops;
    }
    if let Some(store) = args.store {
        section.store = store;
    }
    let settings = section.api_settings()?;
    if settings.identity.signed && settings.identity.shared_secret.is_empty() {
        tracing::warn!("signed identification is on with an empty shared secret: anyone who can reach the API as a trusted proxy can sign; set [serve.identity] shared_secret_file");
    }
    let limits = section.limits();
    fd_limit::ensure(limits.max_connections, "[serve.limits] max_connections")?;
    let metadata_limits = metadata_listener_limits(&settings, limits.clone());
    let listen = parse_addr(&section.listen, "listen address")?;
    let admin_listen = parse_addr(&section.admin.listen, "admin listen address")?;

    let store: Arc<dyn Store> = config::open_store(&section.store).await?;
    let admin_token = match (&section.admin.token_file, args.demo) {
        (Some(path), _) => {
            let token = config::read_secret(path, "the admin token")?;
            if token.is_empty() {
                anyhow::bail!(
                    "the admin token file {} is empty: put a token in it (for example: openssl rand -hex 32 > {})",
                    path.display(),
                    path.display()
                );
            }
            Some(token)
        }
        (None, true) => {
            let mut bytes = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut bytes);
            Some(hex::encode(bytes))
        }
        (None, false) => None,
    };
    if args.demo {
        let example = meta169_tree::example_instance();
        store.put_instance(&example).await?;
    }

    let service = Arc::new(MetadataService::new(store, settings, limits.clone())?);
    let listener = meta169_http::bind::bind_tcp(listen).with_context(|| {
        format!("cannot listen on {listen} (in use, or a privileged port without root?)")
    })?;
    tracing::info!(%listen, store = %meta169_store::redact(&section.store), "metadata API listening");

    let admin_task = match &admin_token {
        Some(token) => {
            let admin_listener = meta169_http::bind::bind_tcp(admin_listen)
                .with_context(|| format!("cannot listen on {admin_listen} for the admin API"))?;
            tracing::info!(%admin_listen, "admin API listening");
            let router = admin::router(service.clone(), token.clone());
            // The orchestrator may open many connections from one address.
            let admin_limits = server::ServerLimits {
                max_connections_per_source: 0,
                ..limits.clone()
            };
            Some(tokio::spawn(server::serve(
                admin_listener,
                router,
                admin_limits,
                crate::signals::shutdown(),
            )))
        }
        None => {
            tracing::info!("admin API off: set [serve.admin] token_file to enable it");
            None
        }
    };

    let ops_task = {
        let ready_service = service.clone();
        // Ready while the cache cannot have missed a change for longer
        // than max_staleness_seconds; the store's change watcher checks
        // the store itself (a fresh open or a heartbeat) several times a
        // second, so this check does no I/O of its own.
        let ready: ReadyCheck = Arc::new(move || {
            let service = ready_service.clone();
            Box::pin(async move {
                let answer = service.readiness();
                service.metrics.ready.set(i64::from(answer.is_ok()));
                answer
            })
        });
        ops::open(&section.ops_listen, service.metrics.registry(), ready).await?
    };
    ops::notify_ready();

    if args.demo {
        let uuid = meta169_tree::example_instance().uuid;
        let token = admin_token.unwrap_or_default();
        println!(
            "\nmeta169 demo: one instance ({uuid}) bound to 127.0.0.1, throw-away store.\nTry:\n\
             \n  curl http://{listen}/openstack\
             \n  curl http://{listen}/openstack/latest/meta_data.json\
             \n  curl http://{listen}/latest/meta-data/\
             \n  curl http://{listen}/latest/meta-data/public-keys/0/openssh-key\
             \n  curl http://{listen}/latest/user-data\
             \n  curl -X POST --data-binary secret http://{listen}/openstack/latest/password\
             \n  curl -H 'Authorization: Bearer {token}' http://{admin_listen}/v1/instances\
             \n\nStop with Ctrl-C.\n"
        );
    }

    server::serve_direct(
        listener,
        metadata_handler(service),
        metadata_limits,
        crate::signals::shutdown(),
    )
    .await;
    for task in [admin_task, ops_task].into_iter().flatten() {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
