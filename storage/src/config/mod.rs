//! Typed configuration of backends and the blob cache.
//!
//! These are the resolved settings the storage layer works with. Upstream's
//! backend sections (`{"type": "registry", "config": {...}}` in v1 files,
//! `[backend.registry]` in v2 files, `nydus-image --backend-config`) are
//! turned into a [`BackendConfig`] by [`backend_from_json`] (or, for callers
//! that report key paths of their own, [`resolve_backend_section`]); unknown
//! keys come back as warnings and bad values as errors naming the key path.

mod fields;
mod http_sections;
mod network_sections;
mod sections;

use std::path::PathBuf;
use std::time::Duration;

pub use sections::{backend_from_json, resolve_backend_section, BackendSection, ConfigIssue};

/// Where blobs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// Blobs are files in a local directory (or one given file).
    LocalFs(LocalFsConfig),
    /// Blobs are layers in an OCI distribution registry (needs the
    /// `backend-registry` feature to be opened).
    Registry(RegistryConfig),
    /// Blobs are objects in an S3 bucket (feature `backend-s3`).
    S3(S3Config),
    /// Blobs are objects in an Aliyun OSS bucket (feature `backend-oss`).
    Oss(OssConfig),
    /// Blobs are served by a plain HTTP server, over TCP or a Unix socket
    /// (feature `backend-http-proxy`).
    HttpProxy(HttpProxyConfig),
}

/// A secret string (password, token, key). Its `Debug` output is redacted
/// so that configurations can be logged; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings shared by every HTTP backend (upstream keeps them in each
/// backend's section under the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Whole-request timeout, body included (upstream `timeout`, default 5 s).
    /// A stalled server costs at most this per attempt.
    pub timeout: Duration,
    /// TCP + TLS connection timeout (upstream `connect_timeout`, default 5 s).
    pub connect_timeout: Duration,
    /// Retries after the first attempt of a failed request (upstream
    /// `retry_limit`, default 0). Only transient failures are retried:
    /// connection errors, timeouts, cut bodies, 5xx and 429.
    pub retry_limit: u32,
    /// First retry delay; doubled for each further retry, with jitter.
    pub retry_base_delay: Duration,
    /// Upper bound of one retry delay (also caps a `Retry-After`).
    pub retry_max_delay: Duration,
    /// Accept any TLS certificate (upstream `skip_verify`). Unsafe outside tests.
    pub skip_verify: bool,
    /// Extra PEM CA bundles trusted besides the built-in web roots.
    pub ca_cert_files: Vec<PathBuf>,
    /// Send requests through this forward proxy (e.g. a Dragonfly dfdaemon).
    pub proxy: Option<ProxyConfig>,
}

/// A forward HTTP proxy in front of a backend (upstream `ProxyConfig`), the
/// way a Dragonfly dfdaemon is plugged in. See `docs/nydusd-config.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://host:port` of the proxy (a bare `host:port` is read as http).
    pub url: String,
    /// Health check URL, asked every `check_interval`; any 2xx/3xx answer
    /// means healthy. `None`: no health checks, the proxy is always tried
    /// first (upstream's behaviour without `ping_url`).
    pub ping_url: Option<String>,
    /// Go to the backend directly while the proxy is unhealthy, or when a
    /// request through it fails to connect or answers 5xx (default true).
    pub fallback: bool,
    /// Time between health checks (upstream default 5 s).
    pub check_interval: Duration,
    /// Ask the proxy for `http://` URLs instead of tunnelling `https://`
    /// ones through `CONNECT`, so that it can see (and cache) the requests.
    pub use_http: bool,
}

/// One registry mirror (upstream `MirrorConfig`): another server with the
/// same blobs under the same `/v2/<repo>/blobs/<digest>` paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// `http(s)://host[:port]`, or a bare `host[:port]` that takes the
    /// registry's scheme.
    pub host: String,
    /// Headers sent with every request to this mirror (e.g. Dragonfly's
    /// `X-Dragonfly-Registry`); never the registry's `Authorization`.
    pub headers: Vec<(String, String)>,
    /// How often a mirror that was set aside is checked (upstream default 5 s).
    pub health_check_interval: Duration,
    /// Consecutive failures that set the mirror aside (upstream default 5;
    /// at least 1).
    pub failure_limit: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            retry_limit: 0,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(5),
            skip_verify: false,
            ca_cert_files: Vec::new(),
            proxy: None,
        }
    }
}

/// `{"type": "registry", "config": {...}}` (upstream `RegistryConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `http` or `https` (upstream default `https`).
    pub scheme: String,
    /// Registry host, with an optional `:port`.
    pub host: String,
    /// Repository, e.g. `library/ubuntu`.
    pub repo: String,
    /// base64 of `user:password`, sent as Basic auth or to the token realm.
    /// The daemon falls back to the `IMAGE_PULL_AUTH` environment variable.
    pub auth: Option<Secret>,
    /// A ready bearer token sent with every registry request.
    pub registry_token: Option<Secret>,
    /// Scheme to use for redirected blob URLs, when not empty.
    pub blob_url_scheme: String,
    /// Host to use for redirected blob URLs, when not empty.
    pub blob_redirected_host: String,
    /// Tried in order before `host` (an extension of ours: upstream dropped
    /// mirrors).
    pub mirrors: Vec<MirrorConfig>,
    /// Timeouts, retries and TLS.
    pub http: HttpConfig,
}

/// An object store's access key pair. Both halves are kept as [`Secret`]s:
/// upstream also strips the key id from configurations it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// `access_key_id`.
    pub id: Secret,
    /// `access_key_secret`.
    pub secret: Secret,
}

/// `{"type": "s3", "config": {...}}` (upstream `S3Config`). Objects are
/// addressed path-style, `<scheme>://<endpoint>/<bucket>/<prefix><blob id>`,
/// which AWS and every S3-compatible server (MinIO, moto, Ceph) accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `http` or `https` (default `https`).
    pub scheme: String,
    /// `host[:port]` of the S3 service (default `s3.amazonaws.com`).
    pub endpoint: String,
    /// Region the requests are signed for, e.g. `us-east-1`.
    pub region: String,
    /// Bucket holding the blobs.
    pub bucket_name: String,
    /// Prepended to the blob id to form the object key, e.g. `nydus/`.
    pub object_prefix: String,
    /// `None`: anonymous (unsigned) requests, for public buckets.
    pub credentials: Option<AccessKey>,
    /// Timeouts, retries and TLS.
    pub http: HttpConfig,
}

/// `{"type": "oss", "config": {...}}` (upstream `OssConfig`). Objects are
/// addressed virtual-hosted style, `<scheme>://<bucket>.<endpoint>/<prefix><blob id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssConfig {
    /// `http` or `https` (default `https`).
    pub scheme: String,
    /// `host[:port]` of the OSS region, e.g. `oss-cn-hangzhou.aliyuncs.com`.
    pub endpoint: String,
    /// Bucket holding the blobs.
    pub bucket_name: String,
    /// Prepended to the blob id to form the object key.
    pub object_prefix: String,
    /// `None`: anonymous requests, for public-read buckets.
    pub credentials: Option<AccessKey>,
    /// Timeouts, retries and TLS.
    pub http: HttpConfig,
}

/// Where an HTTP proxy backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProxyAddr {
    /// `http://host:port` or `https://host:port` (no path: see [`HttpProxyConfig::path`]).
    Url(String),
    /// An absolute path of a Unix stream socket speaking HTTP/1.1.
    UnixSocket(PathBuf),
}

/// `{"type": "http-proxy", "config": {...}}` (upstream `HttpProxyConfig`):
/// blob `ID` is `GET {addr}{path}/ID` with `Range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxyConfig {
    /// The server.
    pub addr: HttpProxyAddr,
    /// Path prefix of the blobs, `""` or starting with `/` and without a
    /// trailing `/`, e.g. `/namespace/repo/blobs`.
    pub path: String,
    /// Timeouts, retries and TLS (TLS settings only apply to `https`).
    pub http: HttpConfig,
}

/// `{"type": "localfs", "config": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalFsConfig {
    /// Directory holding blobs named by id.
    pub dir: Option<PathBuf>,
    /// A single blob file, used whatever the blob id (single-blob images).
    pub blob_file: Option<PathBuf>,
    /// More directories searched, in order, after `dir`.
    pub alt_dirs: Vec<PathBuf>,
}

/// Which cache to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheKind {
    /// Persistent cache of uncompressed chunks (`blobcache` / `filecache`).
    #[default]
    Blobcache,
    /// No cache: every read goes to the backend.
    Dummy,
}

/// Blob cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache kind.
    pub kind: CacheKind,
    /// Directory of cache files (`<blob id>.blob.data`, `<blob id>.chunk_map`).
    pub work_dir: PathBuf,
    /// Verify every fetched chunk against its digest before it is cached or
    /// returned (default off, as upstream: digests cost CPU).
    pub digest_validate: bool,
    /// Merge adjacent missing chunks into backend reads of up to this many
    /// bytes (default 1 MiB; 0 disables merging).
    pub amplify_io: u64,
    /// Upper bound on the bytes the cache directory may hold; least recently
    /// used chunks are evicted past it. `None`: unbounded (upstream's only mode).
    pub max_size: Option<u64>,
    /// How long a reader waits for another thread's fetch of the same chunk
    /// before it gives up with an error (default 60 s). Bounds the damage of
    /// a stalled backend: readers fail instead of hanging forever.
    pub fetch_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: CacheKind::Blobcache,
            work_dir: PathBuf::from("/var/lib/nydus/cache"),
            digest_validate: false,
            amplify_io: 1 << 20,
            max_size: None,
            fetch_timeout: Duration::from_secs(60),
        }
    }
}

/// Background prefetch settings (`fs_prefetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchConfig {
    /// Prefetch at all.
    pub enable: bool,
    /// Worker threads.
    pub threads_count: usize,
    /// Merge adjacent chunks into backend reads up to this size.
    pub merging_size: u64,
    /// Bytes per second the prefetcher may fetch (0: unlimited).
    pub bandwidth_rate: u64,
    /// Prefetch every blob completely (else only the listed files).
    pub prefetch_all: bool,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self { enable: false, threads_count: 4, merging_size: 1 << 20, bandwidth_rate: 0, prefetch_all: false }
    }
}
