//! Sections shared by both formats, and their resolution into settings.
//!
//! v1's `device.backend.config` (for `localfs`) and v2's `backend.localfs`
//! have the same keys, as do v1's `device.cache.config` and v2's
//! `cache.filecache`; upstream uses one struct for each, and so do we.

use std::path::PathBuf;
use std::time::Duration;

use nydus_storage::config::{
    BackendConfig, CacheConfig, CacheKind, HttpConfig, LocalFsConfig, PrefetchConfig, RegistryConfig, Secret,
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

/// Backends upstream has that we plan to add.
const PLANNED_BACKENDS: &[&str] = &["oss", "s3", "http-proxy"];

/// Environment variable holding base64 `user:password` for registries,
/// used when `auth` is absent (as upstream).
pub(super) const IMAGE_PULL_AUTH: &str = "IMAGE_PULL_AUTH";

/// `localfs` backend settings (upstream `LocalFsConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a section of localfs settings (`dir`, `blob_file`, `alt_dirs`)")]
pub(super) struct LocalFsSection {
    /// A single blob file, used for every blob id.
    #[serde(default)]
    blob_file: String,
    /// Directory of blobs named by id.
    #[serde(default)]
    dir: String,
    /// More directories searched after `dir`.
    #[serde(default)]
    alt_dirs: Vec<String>,
    /// Old upstream access-log readahead; upstream ignores it now.
    #[serde(default)]
    readahead: bool,
    /// Duration of the readahead log; ignored with `readahead`.
    #[serde(rename = "readahead_sec", default)]
    _readahead_sec: u64,
}

/// What both formats say about the backend, before resolution.
pub(super) struct BackendInput<'a> {
    /// `type`, as written.
    pub(super) kind: &'a str,
    /// Key path of `type`.
    pub(super) type_key: &'a str,
    /// The localfs section, if any, and its key path.
    pub(super) localfs: Option<LocalFsSection>,
    pub(super) localfs_key: &'a str,
    /// The registry section, if any, and its key path.
    pub(super) registry: Option<RegistrySection>,
    pub(super) registry_key: &'a str,
}

/// Checks the backend type and resolves the section of that type.
pub(super) fn resolve_backend(ctx: &mut Ctx, input: BackendInput) -> Result<BackendConfig, ConfigError> {
    let type_key = input.type_key;
    match input.kind {
        "localfs" => resolve_localfs(ctx, input.localfs, input.localfs_key),
        "registry" => resolve_registry(ctx, input.registry, input.registry_key),
        k if PLANNED_BACKENDS.contains(&k) => Err(ConfigError::UnsupportedBackend {
            file: ctx.file.clone(),
            key: type_key.to_string(),
            kind: k.to_string(),
        }),
        "localdisk" => Err(ctx.unsupported(
            type_key,
            "backend type `localdisk`",
            "use `localfs` and copy the blobs out of the disk partitions into a directory",
        )),
        other => Err(ctx.invalid(
            type_key,
            format_args!(
                "unknown backend type `{other}`; use \"localfs\" or \"registry\" (oss, s3 and http-proxy are not supported yet)"
            ),
        )),
    }
}

fn resolve_localfs(ctx: &mut Ctx, localfs: Option<LocalFsSection>, key: &str) -> Result<BackendConfig, ConfigError> {
    let Some(s) = localfs else {
        return Err(ctx.invalid(key, "missing; the localfs backend needs this section with `dir` or `blob_file`"));
    };
    if s.dir.is_empty() && s.blob_file.is_empty() {
        return Err(ctx.invalid(
            key,
            "localfs needs `dir` (the directory holding the blobs) or `blob_file` (a single blob); set one of them",
        ));
    }
    if s.readahead {
        ctx.warn(&join(key, "readahead"), "has no effect (upstream ignores it too); remove it");
    }
    let path = |p: String| (!p.is_empty()).then(|| PathBuf::from(p));
    // Fields the storage crate adds later keep their defaults.
    #[allow(clippy::needless_update)]
    let config = LocalFsConfig {
        dir: path(s.dir),
        blob_file: path(s.blob_file),
        alt_dirs: s.alt_dirs.into_iter().map(PathBuf::from).collect(),
        ..Default::default()
    };
    Ok(BackendConfig::LocalFs(config))
}

/// `registry` backend settings (upstream `RegistryConfig`), plus our
/// `ca_cert_files`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a section of registry settings (`host`, `repo`, `auth`, ...)")]
pub(super) struct RegistrySection {
    #[serde(default = "default_scheme")]
    scheme: String,
    host: String,
    repo: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    registry_token: Option<String>,
    #[serde(default)]
    blob_url_scheme: String,
    #[serde(default)]
    blob_redirected_host: String,
    #[serde(default)]
    mirrors: Vec<Value>,
    // Connection keys every HTTP backend section has (upstream repeats them
    // in each backend's struct; serde's `flatten` would lose key paths).
    #[serde(default)]
    skip_verify: bool,
    /// Seconds.
    #[serde(default = "default_http_timeout")]
    timeout: u64,
    /// Seconds.
    #[serde(default = "default_http_timeout")]
    connect_timeout: u64,
    #[serde(default)]
    retry_limit: u8,
    #[serde(default)]
    ca_cert_files: Vec<String>,
    #[serde(default)]
    proxy: Option<ProxySection>,
}

/// `proxy` (upstream `ProxyConfig`): a Dragonfly dfdaemon in front of the backend.
#[derive(Debug, Deserialize)]
pub(super) struct ProxySection {
    #[serde(default)]
    url: String,
    #[serde(rename = "ping_url", default)]
    _ping_url: String,
    #[serde(default = "default_true")]
    fallback: bool,
    #[serde(rename = "check_interval", default)]
    _check_interval: u64,
    #[serde(rename = "use_http", default)]
    _use_http: bool,
}

/// The connection keys of an HTTP backend section.
struct HttpSection {
    skip_verify: bool,
    timeout: u64,
    connect_timeout: u64,
    retry_limit: u8,
    ca_cert_files: Vec<String>,
    proxy: Option<ProxySection>,
}

fn default_scheme() -> String {
    "https".to_string()
}

fn default_http_timeout() -> u64 {
    5
}

fn default_true() -> bool {
    true
}

fn resolve_registry(ctx: &mut Ctx, section: Option<RegistrySection>, key: &str) -> Result<BackendConfig, ConfigError> {
    let Some(s) = section else {
        return Err(ctx.invalid(key, "missing; the registry backend needs this section with `host` and `repo`"));
    };
    if s.scheme != "http" && s.scheme != "https" {
        return Err(ctx.invalid(
            &join(key, "scheme"),
            format_args!("`{}` is not a registry scheme; use \"https\" or \"http\"", s.scheme),
        ));
    }
    if s.host.is_empty() || s.host.contains(['/', '@', '?', '#']) {
        return Err(ctx.invalid(
            &join(key, "host"),
            "must be the registry's host name with an optional :port, e.g. \"registry.example.com:5000\"",
        ));
    }
    let repo = s.repo.trim_matches('/');
    if repo.is_empty() || repo.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(ctx.invalid(&join(key, "repo"), "must be a repository name such as \"library/ubuntu\""));
    }
    for (v, name) in [(&s.blob_url_scheme, "blob_url_scheme")] {
        if !v.is_empty() && v != "http" && v != "https" {
            return Err(ctx.invalid(&join(key, name), "use \"http\", \"https\" or leave it empty"));
        }
    }
    let auth = match s.auth.filter(|a| !a.is_empty()) {
        Some(a) => Some((a, join(key, "auth"))),
        None => std::env::var(IMAGE_PULL_AUTH)
            .ok()
            .filter(|a| !a.is_empty())
            .map(|a| (a, format!("environment variable {IMAGE_PULL_AUTH}"))),
    };
    if let Some((a, source)) = &auth {
        if !is_base64_user_pass(a) {
            // Never echo the value: it is a credential.
            return Err(ctx.invalid(
                source,
                "must be base64 of `user:password` (e.g. the output of `printf %s user:password | base64 -w0`)",
            ));
        }
    }
    if !s.mirrors.is_empty() {
        ctx.warn(&join(key, "mirrors"), "registry mirrors are not supported yet; blobs are fetched from `host`");
    }
    let http = HttpSection {
        skip_verify: s.skip_verify,
        timeout: s.timeout,
        connect_timeout: s.connect_timeout,
        retry_limit: s.retry_limit,
        ca_cert_files: s.ca_cert_files,
        proxy: s.proxy,
    };
    let http = resolve_http(ctx, http, key)?;
    Ok(BackendConfig::Registry(RegistryConfig {
        scheme: s.scheme,
        host: s.host,
        repo: repo.to_string(),
        auth: auth.map(|(a, _)| Secret::new(a.trim())),
        registry_token: s.registry_token.filter(|t| !t.is_empty()).map(Secret::new),
        blob_url_scheme: s.blob_url_scheme,
        blob_redirected_host: s.blob_redirected_host,
        http,
    }))
}

/// Resolves the connection keys of an HTTP backend section at `key`.
fn resolve_http(ctx: &mut Ctx, s: HttpSection, key: &str) -> Result<HttpConfig, ConfigError> {
    for (v, name) in [(s.timeout, "timeout"), (s.connect_timeout, "connect_timeout")] {
        if v == 0 || v > 3600 {
            return Err(
                ctx.invalid(&join(key, name), format_args!("{v} seconds is out of range; use 1 to 3600 (default 5)"))
            );
        }
    }
    if let Some(p) = s.proxy.filter(|p| !p.url.is_empty()) {
        if p.fallback {
            ctx.warn(
                &join(key, "proxy.url"),
                "the HTTP proxy (Dragonfly dfdaemon) is not supported yet; requests go to the backend directly, as on a proxy failure with `fallback`",
            );
        } else {
            return Err(ctx.unsupported(
                &join(key, "proxy.url"),
                "the HTTP proxy (Dragonfly dfdaemon)",
                "remove `proxy` (or set `proxy.fallback = true`) to fetch from the backend directly",
            ));
        }
    }
    Ok(HttpConfig {
        timeout: Duration::from_secs(s.timeout),
        connect_timeout: Duration::from_secs(s.connect_timeout),
        retry_limit: u32::from(s.retry_limit),
        skip_verify: s.skip_verify,
        ca_cert_files: s.ca_cert_files.into_iter().map(PathBuf::from).collect(),
        ..Default::default()
    })
}

/// Whether `auth` decodes to `user:password`.
fn is_base64_user_pass(a: &str) -> bool {
    decode_base64(a.trim()).and_then(|b| String::from_utf8(b).ok()).is_some_and(|t| t.contains(':'))
}

/// Standard base64 with padding; `None` if malformed.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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
