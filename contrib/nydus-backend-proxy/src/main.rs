//! `nydus-backend-proxy`: serve a directory of Nydus blobs over HTTP, for
//! nydusd's registry backend (`scheme: http`) or any client that reads
//! blobs by `HEAD`/`GET /<namespace>/<repo>/blobs/sha256:<id>` with `Range`.
//!
//! One tokio runtime accepts connections; at most `--max-connections` are
//! served at once (further ones wait in the kernel's accept queue), each
//! by hyper's HTTP/1 server. SIGINT and SIGTERM stop accepting, let open
//! connections finish their current request, and exit.

mod range;
mod route;
mod serve;

use std::convert::Infallible;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use serve::BlobDir;

/// Serve a directory of Nydus blobs over HTTP, with Range support.
#[derive(Parser, Debug)]
#[command(name = "nydus-backend-proxy", version, about)]
struct Cli {
    /// Directory holding the blobs, each named by its sha256 id.
    #[arg(short = 'b', long, value_name = "DIR")]
    blobsdir: PathBuf,
    /// Address to listen on.
    #[arg(short = 'a', long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Connections served at once; more wait until one closes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// Worker threads of the runtime (default: the number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Log level: trace, debug, info (one line per request), warn, error.
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
}

/// How long open connections may take to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("invalid --log-level {:?}", cli.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match std::fs::metadata(&cli.blobsdir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--blobsdir {}: not a directory", cli.blobsdir.display()),
        Err(e) => bail!("--blobsdir {}: {e}", cli.blobsdir.display()),
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n as usize);
    }
    let rt = rt.enable_all().build().context("cannot start the tokio runtime")?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
    // Handle stop signals before the port opens: a client that sees the port
    // may signal at once.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let listener = TcpListener::bind(cli.addr).await.with_context(|| format!("cannot listen on {}", cli.addr))?;
    let local = listener.local_addr()?;
    let blobs = Arc::new(BlobDir::new(&cli.blobsdir));
    let limit = Arc::new(Semaphore::new(cli.max_connections as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(addr = %local, blobsdir = %blobs.dir().display(), max_connections = cli.max_connections, "serving");
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.context("connection limiter closed")?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        let blobs = blobs.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let blobs = blobs.clone();
                async move { Ok::<_, Infallible>(blobs.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    tracing::info!("stop signal received; finishing open connections");
    drop(listener);
    let _ = stop_tx.send(true);
    let all = cli.max_connections;
    match tokio::time::timeout(DRAIN, limit.acquire_many(all)).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::warn!("connections still open after {DRAIN:?}; exiting anyway"),
    }
    Ok(())
}
