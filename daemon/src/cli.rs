//! `nydusd` command line (upstream's flags).

use std::path::PathBuf;

use clap::Parser;

/// Serve a Nydus RAFS image as a read-only FUSE filesystem, fetching file
/// data lazily from its blobs through a local cache.
#[derive(Parser, Debug)]
#[command(
    name = "nydusd",
    version,
    about,
    after_help = "The optional first word `fuse` (as in `nydusd fuse ...`) is accepted for compatibility."
)]
pub struct Args {
    /// Configuration file: upstream's v1 JSON or v2 JSON/TOML (see docs/nydusd-config.md).
    #[arg(short = 'C', long)]
    pub config: Option<PathBuf>,
    /// Where to mount the daemon's filesystem.
    #[arg(short = 'M', long)]
    pub mountpoint: PathBuf,
    /// The image's bootstrap (RAFS metadata), served at the root of the mountpoint.
    /// Without it the mountpoint starts empty and images are mounted at sub-paths
    /// through the API (`--apisock`).
    #[arg(short = 'B', long)]
    pub bootstrap: Option<PathBuf>,
    /// Without --config: serve blobs from this directory and cache in it.
    #[arg(short = 'D', long)]
    pub localfs_dir: Option<PathBuf>,
    /// Unix socket of the control API (created with mode 0600, removed on exit; see
    /// docs/nydusd-api.md).
    #[arg(short = 'A', long)]
    pub apisock: Option<PathBuf>,
    /// Also serve `GET /metrics` (Prometheus text) over TCP at this address, e.g.
    /// 127.0.0.1:9110.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Image builds (`POST /api/v1/build`) run at the same time at most; each uses one core.
    #[arg(long, default_value_t = 1)]
    pub build_workers: usize,
    /// Supervisor socket (reported in the daemon info; kept for compatibility).
    #[arg(long)]
    pub supervisor: Option<String>,
    /// FUSE worker threads. Over io_uring, also the queue threads in all,
    /// spread over the kernel's per-CPU queues with at least 2 on each.
    #[arg(short = 'T', long = "thread-num", visible_alias = "fuse-threads", default_value_t = 4)]
    pub thread_num: usize,
    /// File listing paths (one per line) to prefetch after mounting.
    #[arg(short = 'P', long)]
    pub prefetch_files: Option<PathBuf>,
    /// Daemon id (reported in logs).
    #[arg(long)]
    pub id: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log to this file instead of stderr.
    #[arg(short = 'L', long)]
    pub log_file: Option<PathBuf>,
}

/// Parse the process arguments, dropping a leading `fuse` subcommand word.
pub fn parse() -> Args {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "fuse") {
        argv.remove(1);
    }
    Args::parse_from(argv)
}
