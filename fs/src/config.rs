//! Settings of a mounted RAFS filesystem.

use std::time::Duration;

use nydus_storage::PrefetchConfig;

/// How a RAFS instance serves its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Upstream's `mode` ("direct" or "cached"); both serve the same data
    /// here and the value is kept for reporting.
    pub mode: String,
    /// Verify chunk digests on fetch (passed to the cache).
    pub digest_validate: bool,
    /// Keep per-file I/O statistics.
    pub iostats_files: bool,
    /// Serve extended attributes (upstream's `enable_xattr`). Default on:
    /// images carry capabilities and ACLs that programs rely on.
    pub enable_xattr: bool,
    /// How long the kernel may cache lookups. The image is immutable, so
    /// the default is long (1 day).
    pub entry_timeout: Duration,
    /// How long the kernel may cache attributes (default 1 day).
    pub attr_timeout: Duration,
    /// Let the kernel keep file pages across opens (default on).
    pub keep_cache: bool,
    /// FUSE passthrough for large files wholly in the blob cache (see
    /// [`crate::passthrough`]; default off).
    pub passthrough: bool,
    /// Smallest file passed through (default 16 MiB).
    pub passthrough_min_size: u64,
    /// Serve FUSE requests over io_uring when the kernel offers it (the
    /// `fuse` module's `enable_uring` is on; default on). A property of the
    /// daemon's FUSE connection, not of one image.
    pub io_uring: bool,
    /// Background prefetch.
    pub prefetch: PrefetchConfig,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            mode: "direct".into(),
            digest_validate: false,
            iostats_files: false,
            enable_xattr: true,
            entry_timeout: Duration::from_secs(86400),
            attr_timeout: Duration::from_secs(86400),
            keep_cache: true,
            passthrough: false,
            passthrough_min_size: 16 << 20,
            io_uring: true,
            prefetch: PrefetchConfig::default(),
        }
    }
}
