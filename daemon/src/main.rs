//! `nydusd`: serve RAFS images over FUSE with a lazy, persistent blob cache, controlled
//! through an HTTP API on a Unix socket.

mod builds;
mod channel;
mod cli;
mod config;
mod handler;
mod init;
mod logging;
mod metrics;
mod mounts;
mod notify;
mod passthrough;
#[allow(dead_code)] // until the API server serves `GET /metrics`
mod prometheus;
mod redact;
mod server;
mod state;
mod uring;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{bail, Context, Result};
use fuse_backend_rs::api::{Vfs, VfsOptions};
use nydus_api::ApiHandler;

use mounts::Mounts;
use notify::Notifier;
use passthrough::BackingRegistry;
use server::{Event, Mounted};
use state::MountState;

fn main() -> ExitCode {
    let args = cli::parse();
    let log = match logging::init(&args.log_level, args.log_file.as_deref()) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(args, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if !std::io::stderr().is_terminal() {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn prefetch_paths(args: &cli::Args) -> Result<Vec<String>> {
    let Some(p) = &args.prefetch_files else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read prefetch list {}", p.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

/// The configuration given on the command line, with its text (kept in the mount state).
fn startup_config(args: &cli::Args) -> Result<Option<(config::DaemonConfig, String)>> {
    Ok(match (&args.config, &args.localfs_dir) {
        (Some(c), _) => {
            let (cfg, warnings) = config::load_file(c)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            let text = std::fs::read_to_string(c).with_context(|| format!("cannot read {}", c.display()))?;
            Some((cfg, text))
        }
        (None, Some(d)) => {
            let dir = d.display().to_string();
            let text = serde_json::json!({
                "device": {
                    "backend": {"type": "localfs", "config": {"dir": dir}},
                    "cache": {"type": "blobcache", "config": {"work_dir": dir}},
                },
                "mode": "direct",
                "digest_validate": false,
            })
            .to_string();
            Some((config::localfs_dir_config(d), text))
        }
        (None, None) => None,
    })
}

fn vfs_options(keep_cache: bool, passthrough: bool) -> VfsOptions {
    // Read-only images: no write-back cache; the kernel may skip open/opendir (ENOSYS)
    // as RafsFs does on its own, unless opens are answered for passthrough.
    VfsOptions {
        no_writeback: true,
        no_open: keep_cache && !passthrough,
        no_opendir: keep_cache,
        out_opts: nydus_fs::fuse::FS_OPTIONS,
        ..VfsOptions::default()
    }
}

fn run(args: cli::Args, log: Arc<logging::LogControl>) -> Result<()> {
    let startup = startup_config(&args)?;
    if args.bootstrap.is_some() && startup.is_none() {
        bail!("no configuration: pass --config FILE, or --localfs-dir DIR for blobs in a local directory")
    }
    if args.bootstrap.is_none() && args.apisock.is_none() {
        bail!("nothing to serve: pass --bootstrap FILE, or --apisock PATH to mount images through the API")
    }
    // Catch SIGINT/SIGTERM before anything is mounted: a signal that arrives while the
    // mount is being set up is queued and handled (unmount, exit 0), never fatal.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let id = args.id.clone().or(startup.as_ref().and_then(|c| c.0.id.clone())).unwrap_or_else(|| "nydusd".into());
    // Claim the API socket first: a second daemon on the same socket fails before mounting.
    let api_socket = match &args.apisock {
        Some(p) => Some(nydus_api::server::bind_unix(p)?),
        None => None,
    };
    let metrics_listener = match args.metrics_addr {
        Some(a) => Some(std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?),
        None => None,
    };
    server::clean_stale_mountpoint(&args.mountpoint)?;
    let keep_cache = startup.as_ref().is_none_or(|c| c.0.fs.keep_cache);
    // Passthrough is a property of the FUSE connection: the startup config decides.
    let passthrough = startup.as_ref().is_some_and(|c| c.0.fs.passthrough);
    // So is io_uring (used only if the kernel offers it).
    let io_uring = startup.as_ref().is_none_or(|c| c.0.fs.io_uring);
    let mut vfs = Vfs::new(vfs_options(keep_cache, passthrough));
    vfs.set_remove_pseudo_root();
    let vfs = Arc::new(vfs);
    let backing = passthrough.then(|| Arc::new(BackingRegistry::default()));
    let mounts = Arc::new(Mounts::new(vfs.clone(), backing.clone()));
    if let (Some(b), Some((cfg, text))) = (&args.bootstrap, &startup) {
        let state = MountState {
            source: b.display().to_string(),
            fs_type: "rafs".into(),
            config: text.clone(),
            prefetch_files: prefetch_paths(&args)?,
        };
        let loaded = mounts.load(&state, Some(cfg.clone())).map_err(|e| anyhow::anyhow!("{e}"))?;
        mounts.mount("/", state, loaded).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (tx, rx) = mpsc::channel();
    let transport = server::Transport { threads: args.thread_num, passthrough, io_uring };
    let mounted = Mounted::start(vfs, &args.mountpoint, transport, tx.clone(), |session| {
        let notifier = server::clone_dev(session).map(|f| Arc::new(Notifier::new(f)));
        if let Some(b) = &backing {
            let attached = notifier.as_ref().map_err(|e| anyhow::anyhow!("{e}")).and_then(|n| {
                b.attach(server::clone_dev(session)?, n.clone());
                Ok(())
            });
            if let Err(e) = attached {
                tracing::warn!(error = %e, "passthrough unavailable; large files are read through the page cache");
            }
        }
        match notifier {
            Ok(n) => mounts.set_notifier(n),
            Err(e) => {
                tracing::warn!(error = %e, "kernel cache invalidation unavailable; remounts may show stale names")
            }
        }
    })?;
    tracing::info!(id = %id, mountpoint = %args.mountpoint.display(), "nydusd ready");
    let api = match api_socket {
        Some((listener, guard)) => {
            let handler = Arc::new(handler::Handler {
                id: id.clone(),
                supervisor: args.supervisor.clone(),
                mounts: mounts.clone(),
                log: log.clone(),
                events: Mutex::new(tx.clone()),
                builds: builds::BuildPool::new(args.build_workers)?,
                errors: Mutex::new((0, VecDeque::new())),
            });
            Some((ApiThread::start(listener, metrics_listener, handler)?, guard))
        }
        None => None,
    };
    let handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = tx.send(Event::Signal(sig));
        }
    });
    match rx.recv() {
        Ok(Event::Signal(sig)) => tracing::info!(signal = sig, "signal received; unmounting"),
        Ok(Event::Exit) => {
            tracing::info!("exiting as requested through the API; unmounting");
            // Let the API answer the exit request before its runtime stops.
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(Event::WorkerExit) | Err(_) => tracing::info!("filesystem unmounted; exiting"),
    }
    handle.close();
    if let Some((t, guard)) = api {
        t.stop();
        drop(guard);
    }
    mounted.stop()?;
    drop(mounts);
    tracing::info!("exited cleanly");
    Ok(())
}

/// The API server's runtime thread.
struct ApiThread {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl ApiThread {
    fn start(
        listener: std::os::unix::net::UnixListener,
        metrics: Option<std::net::TcpListener>,
        handler: Arc<handler::Handler>,
    ) -> Result<Self> {
        // One small runtime: the API is light; handlers run on its blocking pool.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(32)
            .thread_name("api")
            .enable_all()
            .build()
            .context("cannot start the API runtime")?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new().name("api".into()).spawn(move || {
            let h: Arc<dyn ApiHandler> = handler;
            rt.block_on(async {
                let tcp = metrics.map(|l| tokio::spawn(nydus_api::server::serve_tcp(l, h.clone(), rx.clone())));
                if let Err(e) = nydus_api::server::serve_unix(listener, h, rx).await {
                    tracing::error!(error = %e, "API server stopped");
                }
                if let Some(t) = tcp {
                    let _ = t.await;
                }
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        })?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}
