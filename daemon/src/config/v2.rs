//! The v2 format (upstream `ConfigV2`), in TOML or JSON.
//!
//! ```toml
//! version = 2
//! [backend]
//! type = "localfs"
//! localfs.dir = "/blobs"
//! [cache]
//! type = "blobcache"
//! filecache.work_dir = "/cache"
//! [rafs]
//! mode = "direct"
//! ```
//!
//! Every backend and cache kind has its own section (`backend.localfs`,
//! `cache.filecache`); sections of kinds other than the selected `type` are
//! accepted and ignored, as upstream's sample configuration lists them all.

use nydus_fs::config::FsConfig;
use serde::Deserialize;
use serde_json::Value;

use super::parse::Ctx;
use super::sections::{
    check_mode, resolve_backend, resolve_cache, resolve_prefetch, warn_external_backends, warn_unsupported_switches,
    CacheInput, FileCacheSection, KernelCache, PrefetchInput, PrefetchKeys, DEFAULT_BATCH_SIZE,
    DEFAULT_PREFETCH_THREADS,
};
use super::{ConfigError, DaemonConfig};

/// The whole file (`version` already checked and removed).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a document of v2 settings (`backend`, `cache`, `rafs`)")]
struct ConfigV2 {
    #[serde(default)]
    id: String,
    backend: Option<BackendV2>,
    #[serde(default)]
    external_backends: Vec<Value>,
    /// Absent: no cache (upstream refuses to mount without it).
    cache: Option<CacheV2>,
    /// Absent: all defaults (upstream refuses to mount without it).
    rafs: Option<RafsV2>,
    overlay: Option<Value>,
}

/// `backend` (upstream `BackendConfigV2`): the type and a section per
/// backend type, of which only the selected one is read (upstream's sample
/// files carry sections of every kind, with placeholder values).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section with the backend `type` and its settings")]
struct BackendV2 {
    #[serde(rename = "type")]
    kind: String,
    localfs: Option<Value>,
    localdisk: Option<Value>,
    oss: Option<Value>,
    s3: Option<Value>,
    registry: Option<Value>,
    /// Upstream's key is `http-proxy`; `http_proxy` is accepted too.
    #[serde(rename = "http-proxy", alias = "http_proxy")]
    http_proxy: Option<Value>,
}

/// `cache` (upstream `CacheConfigV2`).
#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a section with the cache `type` and its settings")]
struct CacheV2 {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    compressed: bool,
    #[serde(default)]
    validate: bool,
    /// Upstream's blob-level prefetch workers; we prefetch as `rafs.prefetch` says.
    #[serde(default)]
    prefetch: PrefetchV2,
    filecache: Option<FileCacheSection>,
    #[serde(rename = "fscache")]
    _fscache: Option<Value>,
}

/// `rafs` (upstream `RafsConfigV2`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section of filesystem settings (`mode`, `validate`, ...)")]
struct RafsV2 {
    #[serde(default = "default_mode")]
    mode: String,
    /// Upstream's `user_io_batch_size`; v1 calls it `amplify_io`.
    #[serde(default = "default_batch_size")]
    batch_size: u64,
    #[serde(default)]
    validate: bool,
    /// Absent: keep our default (on); upstream's default is off.
    #[serde(default)]
    enable_xattr: Option<bool>,
    #[serde(default)]
    iostats_files: bool,
    #[serde(default)]
    access_pattern: bool,
    #[serde(default)]
    latest_read_files: bool,
    #[serde(default)]
    prefetch: PrefetchV2,
    /// Seconds the kernel may cache lookups (ours; upstream fixes it).
    #[serde(default)]
    entry_timeout: Option<f64>,
    /// Seconds the kernel may cache attributes (ours).
    #[serde(default)]
    attr_timeout: Option<f64>,
    /// Keep file pages in the kernel's cache across opens (ours).
    #[serde(default)]
    keep_cache: Option<bool>,
    /// FUSE passthrough for large cached files (ours).
    #[serde(default)]
    passthrough: Option<bool>,
    /// Smallest file passed through, in bytes (ours).
    #[serde(default)]
    passthrough_min_size: Option<u64>,
    /// FUSE over io_uring when the kernel offers it (ours).
    #[serde(default)]
    io_uring: Option<bool>,
}

impl Default for RafsV2 {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            batch_size: DEFAULT_BATCH_SIZE,
            validate: false,
            enable_xattr: None,
            iostats_files: false,
            access_pattern: false,
            latest_read_files: false,
            prefetch: PrefetchV2::default(),
            entry_timeout: None,
            attr_timeout: None,
            keep_cache: None,
            passthrough: None,
            passthrough_min_size: None,
            io_uring: None,
        }
    }
}

/// `cache.prefetch` and `rafs.prefetch` (upstream `PrefetchConfigV2`). The
/// v1 names are accepted as aliases.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section of prefetch settings (`enable`, `threads`, ...)")]
struct PrefetchV2 {
    /// Upstream requires this key; we default it to off.
    #[serde(default)]
    enable: bool,
    #[serde(alias = "threads_count", default = "default_threads")]
    threads: usize,
    #[serde(alias = "merging_size", default = "default_batch_size")]
    batch_size: u64,
    #[serde(alias = "bandwidth_rate", default)]
    bandwidth_limit: u64,
    #[serde(default)]
    prefetch_all: bool,
    #[serde(default)]
    stream_prefetch: bool,
}

impl Default for PrefetchV2 {
    fn default() -> Self {
        Self {
            enable: false,
            threads: DEFAULT_PREFETCH_THREADS,
            batch_size: DEFAULT_BATCH_SIZE,
            bandwidth_limit: 0,
            prefetch_all: false,
            stream_prefetch: false,
        }
    }
}

impl PrefetchV2 {
    fn input(&self) -> PrefetchInput {
        PrefetchInput {
            enable: self.enable,
            threads: self.threads,
            batch_size: self.batch_size,
            bandwidth: self.bandwidth_limit,
            prefetch_all: self.prefetch_all,
            stream_prefetch: self.stream_prefetch,
        }
    }
}

fn default_mode() -> String {
    "direct".to_string()
}

fn default_batch_size() -> u64 {
    DEFAULT_BATCH_SIZE
}

fn default_threads() -> usize {
    DEFAULT_PREFETCH_THREADS
}

const CACHE_PREFETCH_KEYS: PrefetchKeys<'static> =
    PrefetchKeys { section: "cache.prefetch", threads: "threads", batch_size: "batch_size" };
const RAFS_PREFETCH_KEYS: PrefetchKeys<'static> =
    PrefetchKeys { section: "rafs.prefetch", threads: "threads", batch_size: "batch_size" };

/// Parses and resolves a v2 document (`version` already removed).
pub(super) fn load(ctx: &mut Ctx, doc: Value) -> Result<DaemonConfig, ConfigError> {
    let raw: ConfigV2 = ctx.section(doc, "")?;
    if raw.overlay.is_some() {
        return Err(ctx.unsupported(
            "overlay",
            "a writable overlay",
            "remove the `overlay` section; the filesystem is served read-only (use overlayfs on top for writes)",
        ));
    }
    let Some(b) = raw.backend else {
        return Err(ctx.invalid(
            "backend",
            "required section is missing; add `backend.type = \"localfs\"` and `backend.localfs.dir`",
        ));
    };
    let (section, key) = match b.kind.as_str() {
        "localfs" => (b.localfs, "backend.localfs"),
        "localdisk" => (b.localdisk, "backend.localdisk"),
        "oss" => (b.oss, "backend.oss"),
        "s3" => (b.s3, "backend.s3"),
        "registry" => (b.registry, "backend.registry"),
        "http-proxy" => (b.http_proxy, "backend.http-proxy"),
        _ => (None, "backend"),
    };
    let backend = resolve_backend(ctx, &b.kind, "backend.type", section, key)?;

    let rafs = raw.rafs.unwrap_or_default();
    check_mode(ctx, &rafs.mode, "rafs.mode")?;
    let cache_section = raw.cache.unwrap_or_default();
    let digest_validate = rafs.validate || cache_section.validate;
    let cache = resolve_cache(
        ctx,
        CacheInput {
            kind: &cache_section.kind,
            type_key: "cache.type",
            compressed: (cache_section.compressed, "cache.compressed"),
            filecache: cache_section.filecache,
            filecache_key: "cache.filecache",
            digest_validate,
            amplify_io: (rafs.batch_size, "rafs.batch_size"),
        },
    )?;

    // Validated as upstream does, but only rafs.prefetch drives prefetching.
    resolve_prefetch(ctx, cache_section.prefetch.input(), &CACHE_PREFETCH_KEYS)?;
    let prefetch = resolve_prefetch(ctx, rafs.prefetch.input(), &RAFS_PREFETCH_KEYS)?;
    if cache_section.prefetch.enable && !rafs.prefetch.enable {
        ctx.warn(
            "cache.prefetch.enable",
            "has no effect without `rafs.prefetch.enable = true`, which starts prefetching",
        );
    }
    warn_unsupported_switches(
        ctx,
        &[(rafs.access_pattern, "rafs.access_pattern"), (rafs.latest_read_files, "rafs.latest_read_files")],
    );
    warn_external_backends(ctx, &raw.external_backends, "external_backends");

    let defaults = FsConfig::default();
    let times = KernelCache {
        entry: rafs.entry_timeout,
        attr: rafs.attr_timeout,
        keep: rafs.keep_cache,
        passthrough: rafs.passthrough,
        passthrough_min_size: rafs.passthrough_min_size,
        io_uring: rafs.io_uring,
    };
    let mut fs = FsConfig {
        mode: rafs.mode,
        digest_validate,
        iostats_files: rafs.iostats_files,
        enable_xattr: rafs.enable_xattr.unwrap_or(defaults.enable_xattr),
        prefetch,
        ..defaults
    };
    times.apply(ctx, "rafs", &mut fs)?;
    Ok(DaemonConfig { id: (!raw.id.is_empty()).then_some(raw.id), backend, cache, fs })
}
