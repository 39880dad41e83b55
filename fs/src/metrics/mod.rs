//! Filesystem metrics: what the kernel asks of a mounted image, how often,
//! how fast, and what is stuck right now.
//!
//! [`MeteredFs`] wraps any `fuse-backend-rs` [`FileSystem`] (a [`RafsFs`]
//! in practice) and records every request into an [`FsMetrics`], which the
//! API server shares (`Arc`) to answer upstream's `/api/v1/metrics*`
//! queries ([`FsMetrics::global_json`], [`FsMetrics::files_json`],
//! [`FsMetrics::pattern_json`], [`FsMetrics::inflight_json`]) and to render
//! Prometheus text from the typed [`FsSnapshot`].
//!
//! What is kept, per mount:
//! * per operation: calls, failures, and a latency histogram (whose sum is
//!   upstream's cumulative latency);
//! * reads: bytes returned and a histogram of reply sizes;
//! * with per-file statistics on ([`MetricsOptions`], from the
//!   `iostats_files` setting): per inode, operations, read bytes, read
//!   latency, the first access time and how many reads were sequential;
//! * the requests being served now, with their age, so that a hung backend
//!   shows up as old entries in [`FsMetrics::inflight_json`].
//!
//! The request path only touches atomics: counters are relaxed atomic
//! additions, the per-file table is a fixed-size lock-free hash table
//! filled on first use, and in-flight requests take a slot in a fixed array
//! (a per-thread home slot, so threads rarely meet). Nothing allocates per
//! request; a file's counters are allocated once, on its first request.
//!
//! [`FileSystem`]: fuse_backend_rs::api::filesystem::FileSystem
//! [`RafsFs`]: crate::fuse::RafsFs

mod files;
mod inflight;
mod metered;
mod op;
mod stats;
#[cfg(test)]
mod tests;

pub use files::{rafs_path_resolver, PathResolver};
pub use inflight::InflightRequest;
pub use metered::MeteredFs;
pub use op::Op;
pub use stats::{FsMetrics, FsSnapshot, OpSnapshot, FS_LATENCY_BOUNDS_US, READ_SIZE_BOUNDS};

/// What an [`FsMetrics`] records beyond the always-on global counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Per-file operation counters (upstream's `iostats_files`).
    pub files: bool,
    /// Per-file access pattern: read count, first access time, sequential
    /// vs random reads (upstream's `access_pattern`).
    pub access_pattern: bool,
    /// Remember which files were read since the last
    /// `files_json(latest = true)` (upstream's `latest_read_files`).
    pub latest_read_files: bool,
    /// Most files tracked per mount; requests on further files are counted
    /// globally only (and as `files_untracked`). When any per-file option
    /// is on, the table costs 48 bytes per `max_files` (3 MiB for the
    /// default), plus ~400 bytes per file seen.
    pub max_files: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self { files: false, access_pattern: false, latest_read_files: false, max_files: 1 << 16 }
    }
}

impl MetricsOptions {
    /// Options for a mount with settings `cfg`: `iostats_files` turns on all
    /// per-file recording.
    pub fn from_config(cfg: &crate::config::FsConfig) -> Self {
        let on = cfg.iostats_files;
        Self { files: on, access_pattern: on, latest_read_files: on, ..Self::default() }
    }

    fn per_file(&self) -> bool {
        self.files || self.access_pattern || self.latest_read_files
    }
}
