//! The v1 format: upstream's original JSON file (`RafsConfig`).
//!
//! ```json
//! { "device": { "backend": { "type": "localfs", "config": { "dir": "/blobs" } },
//!               "cache": { "type": "blobcache", "config": { "work_dir": "/cache" } } },
//!   "mode": "direct" }
//! ```
//!
//! `device.backend.config` and `device.cache.config` depend on their `type`,
//! so they are kept as raw values here and parsed once the type is known.

use nydus_fs::config::FsConfig;
use serde::Deserialize;
use serde_json::Value;

use super::parse::Ctx;
use super::sections::{
    check_mode, resolve_backend, resolve_cache, resolve_prefetch, warn_external_backends, warn_unsupported_switches,
    CacheInput, KernelCache, PrefetchInput, PrefetchKeys, DEFAULT_BATCH_SIZE, DEFAULT_PREFETCH_THREADS,
};
use super::{ConfigError, DaemonConfig};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object of v1 settings (`device`, `mode`, ...)")]
struct RafsConfig {
    device: Device,
    /// "direct" or "cached"; required, as upstream.
    mode: String,
    #[serde(default)]
    digest_validate: bool,
    #[serde(default)]
    iostats_files: bool,
    /// Absent: keep our default (on); upstream's default is off.
    #[serde(default)]
    enable_xattr: Option<bool>,
    #[serde(default)]
    access_pattern: bool,
    #[serde(default)]
    latest_read_files: bool,
    #[serde(default = "default_batch_size")]
    amplify_io: u64,
    #[serde(default)]
    fs_prefetch: FsPrefetch,
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

/// `device` (upstream `FactoryConfig`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section with `backend` and `cache`")]
struct Device {
    #[serde(default)]
    id: String,
    backend: Backend,
    #[serde(default)]
    cache: Cache,
    #[serde(default)]
    external_backends: Vec<Value>,
}

/// `device.backend`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section with the backend `type` and its `config`")]
struct Backend {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Value,
}

/// `device.cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a section with the cache `type` and its `config`")]
struct Cache {
    /// Absent or "": no cache (upstream's dummy cache).
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    compressed: bool,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    validate: bool,
}

/// `fs_prefetch` (upstream `FsPrefetchControl`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section of prefetch settings (`enable`, `threads_count`, ...)")]
struct FsPrefetch {
    #[serde(default)]
    enable: bool,
    #[serde(default = "default_threads")]
    threads_count: usize,
    #[serde(default = "default_batch_size")]
    merging_size: u64,
    #[serde(default)]
    bandwidth_rate: u64,
    /// Upstream's v1 default is on (v2's is off).
    #[serde(default = "default_true")]
    prefetch_all: bool,
    #[serde(default)]
    stream_prefetch: bool,
}

impl Default for FsPrefetch {
    fn default() -> Self {
        Self {
            enable: false,
            threads_count: DEFAULT_PREFETCH_THREADS,
            merging_size: DEFAULT_BATCH_SIZE,
            bandwidth_rate: 0,
            prefetch_all: true,
            stream_prefetch: false,
        }
    }
}

fn default_batch_size() -> u64 {
    DEFAULT_BATCH_SIZE
}

fn default_threads() -> usize {
    DEFAULT_PREFETCH_THREADS
}

fn default_true() -> bool {
    true
}

/// Parses and resolves a v1 document (`version` already removed).
pub(super) fn load(ctx: &mut Ctx, doc: Value) -> Result<DaemonConfig, ConfigError> {
    let raw: RafsConfig = ctx.section(doc, "")?;
    check_mode(ctx, &raw.mode, "mode")?;
    let device = raw.device;

    let config = Some(object_or_empty(device.backend.config));
    let backend = resolve_backend(ctx, &device.backend.kind, "device.backend.type", config, "device.backend.config")?;

    let cache_kind = device.cache.kind.as_str();
    let filecache = match (cache_kind, device.cache.config) {
        ("blobcache" | "filecache", Value::Null) => None,
        ("blobcache" | "filecache", config) => Some(ctx.section(config, "device.cache.config")?),
        ("" | "dummycache", config) if !config.is_null() => {
            ctx.warn("device.cache.config", "ignored: the cache type is dummycache (no cache)");
            None
        }
        _ => None,
    };
    let digest_validate = raw.digest_validate || device.cache.validate;
    let cache = resolve_cache(
        ctx,
        CacheInput {
            kind: cache_kind,
            type_key: "device.cache.type",
            compressed: (device.cache.compressed, "device.cache.compressed"),
            filecache,
            filecache_key: "device.cache.config",
            digest_validate,
            amplify_io: (raw.amplify_io, "amplify_io"),
        },
    )?;

    let p = raw.fs_prefetch;
    let prefetch = resolve_prefetch(
        ctx,
        PrefetchInput {
            enable: p.enable,
            threads: p.threads_count,
            batch_size: p.merging_size,
            bandwidth: p.bandwidth_rate,
            prefetch_all: p.prefetch_all,
            stream_prefetch: p.stream_prefetch,
        },
        &PrefetchKeys { section: "fs_prefetch", threads: "threads_count", batch_size: "merging_size" },
    )?;
    warn_unsupported_switches(
        ctx,
        &[(raw.access_pattern, "access_pattern"), (raw.latest_read_files, "latest_read_files")],
    );
    warn_external_backends(ctx, &device.external_backends, "device.external_backends");

    let defaults = FsConfig::default();
    let times = KernelCache {
        entry: raw.entry_timeout,
        attr: raw.attr_timeout,
        keep: raw.keep_cache,
        passthrough: raw.passthrough,
        passthrough_min_size: raw.passthrough_min_size,
        io_uring: raw.io_uring,
    };
    let mut fs = FsConfig {
        mode: raw.mode,
        digest_validate,
        iostats_files: raw.iostats_files,
        enable_xattr: raw.enable_xattr.unwrap_or(defaults.enable_xattr),
        prefetch,
        ..defaults
    };
    times.apply(ctx, "", &mut fs)?;
    Ok(DaemonConfig { id: (!device.id.is_empty()).then_some(device.id), backend, cache, fs })
}

/// A missing `config` reads as `{}`, so the localfs check names what is missing.
fn object_or_empty(v: Value) -> Value {
    if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    }
}
