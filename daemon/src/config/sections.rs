//! Sections shared by both formats, and their resolution into settings.
//!
//! v1's `device.backend.config` and v2's `backend.<type>` have the same
//! keys; their schema lives in the storage crate
//! ([`nydus_storage::config::resolve_backend_section`]), which `nydus-image`
//! shares. v1's `device.cache.config` and v2's `cache.filecache` have the
//! same keys too; upstream uses one struct for both, and so do we.

use std::path::PathBuf;
use std::time::Duration;

use nydus_fs::config::FsConfig;
use nydus_storage::config::{
    resolve_backend_section, BackendConfig, BackendSection, CacheConfig, CacheKind, PrefetchConfig,
};
use serde::Deserialize;
use serde_json::Value;

use super::parse::{join, ByteSize, Ctx};
use super::ConfigError;

/// Upstream's default for `amplify_io` / `rafs.batch_size` and for the
/// prefetch batch size: 1 MiB.
pub(super) const DEFAULT_BATCH_SIZE: u64 = 1 << 20;
/// Upstream's largest accepted batch size (256 MiB).
const MAX_BATCH_SIZE: u64 = 0x1000_0000;
/// Upstream's default number of prefetch threads.
pub(super) const DEFAULT_PREFETCH_THREADS: usize = 8;
/// Upstream's largest accepted number of prefetch threads.
const MAX_PREFETCH_THREADS: usize = 1024;

/// Resolves the backend section of type `kind` through the storage crate
/// (which owns the backend schema, shared with `nydus-image`), turning its
/// warnings and errors into this file's.
pub(super) fn resolve_backend(
    ctx: &mut Ctx,
    kind: &str,
    type_key: &str,
    section: Option<Value>,
    section_key: &str,
) -> Result<BackendConfig, ConfigError> {
    let input = BackendSection { kind, type_key, section, section_key };
    match resolve_backend_section(input) {
        Ok((config, warnings)) => {
            for w in warnings {
                ctx.warn(&w.key, w.message);
            }
            Ok(config)
        }
        Err(issue) => Err(ctx.invalid(&issue.key, issue.message)),
    }
}

/// `blobcache`/`filecache` settings (upstream `FileCacheConfig`), plus our
/// `max_size`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section of cache settings (`work_dir`, `max_size`, ...)")]
pub(super) struct FileCacheSection {
    /// Directory of cache files. Upstream defaults to "." (nydusd's current
    /// directory); we require it.
    #[serde(default)]
    work_dir: Option<String>,
    /// Deprecated upstream; our chunk map has no such choice.
    #[serde(default)]
    disable_indexed_map: bool,
    #[serde(default)]
    enable_encryption: bool,
    #[serde(default)]
    enable_convergent_encryption: bool,
    /// Only used with encryption, which is refused.
    #[serde(rename = "encryption_key", default)]
    _encryption_key: String,
    /// Our extension: bound on the cache directory's size.
    #[serde(default)]
    max_size: Option<ByteSize>,
}

/// What both formats say about the cache, before resolution.
pub(super) struct CacheInput<'a> {
    /// `type`, as written ("" when absent).
    pub(super) kind: &'a str,
    /// Key path of `type`.
    pub(super) type_key: &'a str,
    /// `compressed`, and its key path.
    pub(super) compressed: (bool, &'a str),
    /// The filecache section (already parsed), and its key path.
    pub(super) filecache: Option<FileCacheSection>,
    pub(super) filecache_key: &'a str,
    /// Digest validation from any source (cache and fs levels).
    pub(super) digest_validate: bool,
    /// `amplify_io` / `rafs.batch_size`, and its key path.
    pub(super) amplify_io: (u64, &'a str),
}

/// Resolves the cache type and its section into [`CacheConfig`].
pub(super) fn resolve_cache(ctx: &mut Ctx, input: CacheInput) -> Result<CacheConfig, ConfigError> {
    let (amplify_io, amplify_key) = input.amplify_io;
    check_batch_size(ctx, amplify_io, amplify_key)?;
    let (compressed, compressed_key) = input.compressed;
    if compressed {
        ctx.warn(compressed_key, "ignored: cached data is always stored uncompressed");
    }
    let base = CacheConfig { digest_validate: input.digest_validate, amplify_io, ..Default::default() };
    match input.kind {
        "" | "dummycache" => Ok(CacheConfig { kind: CacheKind::Dummy, ..base }),
        "blobcache" | "filecache" => {
            let Some(section) = input.filecache else {
                return Err(ctx.invalid(
                    input.filecache_key,
                    format_args!(
                        "missing; cache type `{}` needs it, with `work_dir` naming the cache directory",
                        input.kind
                    ),
                ));
            };
            resolve_filecache(ctx, section, input.filecache_key, base)
        }
        "fscache" => Err(ctx.unsupported(
            input.type_key,
            "cache type `fscache`",
            "it needs the kernel's cachefiles on-demand mode, which nydusd cannot use; use \"blobcache\"",
        )),
        other => Err(ctx.invalid(
            input.type_key,
            format_args!("unknown cache type `{other}`; use \"blobcache\" (or \"filecache\") or \"dummycache\""),
        )),
    }
}

fn resolve_filecache(
    ctx: &mut Ctx,
    s: FileCacheSection,
    key: &str,
    base: CacheConfig,
) -> Result<CacheConfig, ConfigError> {
    for (on, name) in
        [(s.enable_encryption, "enable_encryption"), (s.enable_convergent_encryption, "enable_convergent_encryption")]
    {
        if on {
            return Err(ctx.unsupported(
                &join(key, name),
                "cache encryption",
                "set it to false or remove it; keep the cache directory on an encrypted filesystem instead",
            ));
        }
    }
    if s.disable_indexed_map {
        ctx.warn(&join(key, "disable_indexed_map"), "has no effect (deprecated upstream); remove it");
    }
    let work_dir = match s.work_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            return Err(ctx.invalid(
                &join(key, "work_dir"),
                "required key is missing; set it to the cache directory, e.g. \"/var/lib/nydus/cache\" (upstream silently used nydusd's current directory)",
            ))
        }
    };
    let max_size = match s.max_size {
        Some(ByteSize(0)) => {
            return Err(ctx.invalid(
                &join(key, "max_size"),
                "0 would leave no room for any chunk; give a size such as \"10GiB\", or remove the key for an unbounded cache",
            ))
        }
        other => other.map(|b| b.0),
    };
    Ok(CacheConfig { kind: CacheKind::Blobcache, work_dir, max_size, ..base })
}

/// Prefetch settings from either format, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PrefetchInput {
    pub(super) enable: bool,
    pub(super) threads: usize,
    pub(super) batch_size: u64,
    pub(super) bandwidth: u64,
    pub(super) prefetch_all: bool,
    pub(super) stream_prefetch: bool,
}

/// Key names of a prefetch section, which differ between the formats.
pub(super) struct PrefetchKeys<'a> {
    pub(super) section: &'a str,
    pub(super) threads: &'a str,
    pub(super) batch_size: &'a str,
}

/// Validates prefetch settings as upstream does (limits apply only when
/// prefetch is enabled) and resolves them.
pub(super) fn resolve_prefetch(
    ctx: &mut Ctx,
    p: PrefetchInput,
    keys: &PrefetchKeys,
) -> Result<PrefetchConfig, ConfigError> {
    if p.enable {
        if p.threads == 0 || p.threads > MAX_PREFETCH_THREADS {
            return Err(ctx.invalid(
                &join(keys.section, keys.threads),
                format_args!(
                    "{} prefetch threads is out of range; use 1 to {MAX_PREFETCH_THREADS} (default {DEFAULT_PREFETCH_THREADS})",
                    p.threads
                ),
            ));
        }
        check_batch_size(ctx, p.batch_size, &join(keys.section, keys.batch_size))?;
    }
    if p.stream_prefetch {
        ctx.warn(
            &join(keys.section, "stream_prefetch"),
            "not supported (it only serves a Dragonfly proxy); chunks are prefetched as usual",
        );
    }
    // Fields the storage crate adds later keep their defaults.
    #[allow(clippy::needless_update)]
    let config = PrefetchConfig {
        enable: p.enable,
        threads_count: p.threads,
        merging_size: p.batch_size,
        bandwidth_rate: p.bandwidth,
        prefetch_all: p.prefetch_all,
        ..Default::default()
    };
    Ok(config)
}

fn check_batch_size(ctx: &Ctx, size: u64, key: &str) -> Result<(), ConfigError> {
    if size > MAX_BATCH_SIZE {
        return Err(ctx.invalid(
            key,
            format_args!(
                "{size} bytes is more than the largest batch, {MAX_BATCH_SIZE} (256 MiB); use a smaller value (default {DEFAULT_BATCH_SIZE})"
            ),
        ));
    }
    Ok(())
}

/// Checks `mode` ("direct" or "cached").
pub(super) fn check_mode(ctx: &Ctx, mode: &str, key: &str) -> Result<(), ConfigError> {
    match mode {
        "direct" | "cached" => Ok(()),
        other => Err(ctx.invalid(key, format_args!("unknown mode `{other}`; use \"direct\" or \"cached\""))),
    }
}

/// Warns about upstream switches we accept but do not act on.
pub(super) fn warn_unsupported_switches(ctx: &mut Ctx, switches: &[(bool, &str)]) {
    for &(on, key) in switches {
        if on {
            ctx.warn(key, "not supported yet; ignored");
        }
    }
}

/// Warns when external backends are listed: images here never refer to them.
pub(super) fn warn_external_backends(ctx: &mut Ctx, list: &[Value], key: &str) {
    if !list.is_empty() {
        ctx.warn(key, "external backends are not supported; ignored");
    }
}

/// The kernel-cache settings of a filesystem: `entry_timeout` and
/// `attr_timeout` (seconds), `keep_cache`, `passthrough`,
/// `passthrough_min_size` (bytes) and `io_uring`, top-level in v1 and under
/// `rafs` in v2.
/// Absent keys keep the defaults of [`FsConfig`].
pub(super) struct KernelCache {
    pub(super) entry: Option<f64>,
    pub(super) attr: Option<f64>,
    pub(super) keep: Option<bool>,
    pub(super) passthrough: Option<bool>,
    pub(super) passthrough_min_size: Option<u64>,
    pub(super) io_uring: Option<bool>,
}

impl KernelCache {
    /// Check the values and set them on `fs`; `section` is the key prefix ("" or "rafs").
    pub(super) fn apply(self, ctx: &Ctx, section: &str, fs: &mut FsConfig) -> Result<(), ConfigError> {
        let secs =
            |v: Option<f64>, key: &str, default: Duration| match v {
                None => Ok(default),
                Some(s) if s.is_finite() && (0.0..=u32::MAX as f64).contains(&s) => Ok(Duration::from_secs_f64(s)),
                Some(s) => Err(ctx
                    .invalid(&join(section, key), format_args!("{s} is not a number of seconds from 0 to 4294967295"))),
            };
        fs.entry_timeout = secs(self.entry, "entry_timeout", fs.entry_timeout)?;
        fs.attr_timeout = secs(self.attr, "attr_timeout", fs.attr_timeout)?;
        fs.keep_cache = self.keep.unwrap_or(fs.keep_cache);
        fs.passthrough = self.passthrough.unwrap_or(fs.passthrough);
        fs.io_uring = self.io_uring.unwrap_or(fs.io_uring);
        match self.passthrough_min_size {
            Some(0) => {
                return Err(ctx.invalid(&join(section, "passthrough_min_size"), "must be at least 1 byte"));
            }
            Some(n) => fs.passthrough_min_size = n,
            None => {}
        }
        Ok(())
    }
}
