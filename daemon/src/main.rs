//! `nydusd`: serve a RAFS image over FUSE with a lazy, persistent blob cache.

mod channel;
mod cli;
mod config;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use anyhow::{bail, Context, Result};
use nydus_format::Bootstrap;
use nydus_fs::{Rafs, RafsFs};
use nydus_storage::{new_backend, BlobCacheManager, Prefetcher};

use server::{Event, Mounted};

fn main() -> ExitCode {
    let args = cli::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(args) {
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

fn init_logging(args: &cli::Args) -> Result<()> {
    // fuse-backend-rs logs multi-line session details at info; keep them
    // for debug/trace runs only.
    let spec = match args.log_level.as_str() {
        "info" | "warn" | "error" => format!("{},fuse_backend_rs=warn", args.log_level),
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .with_context(|| format!("invalid --log-level {:?} (use trace, debug, info, warn or error)", args.log_level))?;
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match &args.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?;
            b.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init();
        }
        None => b.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn load_bootstrap(path: &std::path::Path) -> Result<Bootstrap<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read bootstrap {}", path.display()))?;
    Bootstrap::parse(data).with_context(|| format!("invalid bootstrap {}", path.display()))
}

fn prefetch_paths(args: &cli::Args) -> Result<Vec<String>> {
    let Some(p) = &args.prefetch_files else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read prefetch list {}", p.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

fn run(args: cli::Args) -> Result<()> {
    let cfg = match (&args.config, &args.localfs_dir) {
        (Some(c), _) => {
            let (cfg, warnings) = config::load_file(c)?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            cfg
        }
        (None, Some(d)) => config::localfs_dir_config(d),
        (None, None) => {
            bail!("no configuration: pass --config FILE, or --localfs-dir DIR for blobs in a local directory")
        }
    };
    if args.apisock.is_some() {
        tracing::warn!("the control API is not part of this build yet; --apisock is ignored");
    }
    let id = args.id.clone().or(cfg.id.clone()).unwrap_or_else(|| "nydusd".into());
    let paths = prefetch_paths(&args)?;
    let boot = load_bootstrap(&args.bootstrap)?;
    server::clean_stale_mountpoint(&args.mountpoint)?;
    let backend = new_backend(&cfg.backend).context("cannot set up the storage backend")?;
    let cache = BlobCacheManager::new(cfg.cache.clone(), backend).context("cannot set up the blob cache")?;
    let rafs = Arc::new(Rafs::new(boot, &cache, cfg.fs.clone()).context("cannot open the image's blobs")?);
    let (tx, rx) = mpsc::channel();
    let mounted = Mounted::start(RafsFs::new(rafs.clone()), &args.mountpoint, args.thread_num, tx.clone())?;
    tracing::info!(id = %id, mountpoint = %args.mountpoint.display(), bootstrap = %args.bootstrap.display(), blobs = rafs.blobs().len(), "image mounted");
    let prefetcher = start_prefetch(&rafs, &cfg.fs.prefetch, &paths);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = tx.send(Event::Signal(sig));
        }
    });
    match rx.recv() {
        Ok(Event::Signal(sig)) => tracing::info!(signal = sig, "signal received; unmounting"),
        Ok(Event::WorkerExit) | Err(_) => tracing::info!("filesystem unmounted; exiting"),
    }
    handle.close();
    if let Some(p) = prefetcher {
        p.stop();
    }
    mounted.stop()?;
    tracing::info!("exited cleanly");
    Ok(())
}

fn start_prefetch(rafs: &Arc<Rafs>, cfg: &nydus_storage::PrefetchConfig, paths: &[String]) -> Option<Prefetcher> {
    if !cfg.enable && paths.is_empty() {
        return None;
    }
    let per_blob: Vec<Vec<u32>> = if cfg.prefetch_all {
        rafs.blobs().iter().map(|b| (0..b.chunk_count()).collect()).collect()
    } else {
        match rafs.prefetch_chunks(paths) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "prefetch list could not be resolved; prefetch disabled");
                return None;
            }
        }
    };
    let p = Prefetcher::new(cfg);
    for (blob, cis) in rafs.blobs().iter().zip(per_blob) {
        if !cis.is_empty() {
            p.submit(blob.clone(), cis);
        }
    }
    Some(p)
}
