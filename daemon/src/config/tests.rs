//! Literal configuration texts, most of them modelled on upstream's samples
//! (`docs/nydusd.md`, `misc/configs/`).

use std::path::{Path, PathBuf};

use nydus_fs::config::FsConfig;
use std::time::Duration;

use nydus_storage::config::{
    BackendConfig, CacheConfig, CacheKind, HttpConfig, HttpProxyAddr, HttpProxyConfig, LocalFsConfig, MirrorConfig,
    PrefetchConfig, ProxyConfig, RegistryConfig, Secret,
};

use super::parse::parse_byte_size;
use super::{load_file, localfs_dir_config, parse_str, ConfigError, DaemonConfig};

const FILE: &str = "/etc/nydus/c.json";

fn load(text: &str) -> (DaemonConfig, Vec<String>) {
    parse_str(text, FILE).unwrap_or_else(|e| panic!("config refused: {e}"))
}

fn load_clean(text: &str) -> DaemonConfig {
    let (config, warnings) = load(text);
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    config
}

fn error(text: &str) -> String {
    match parse_str(text, FILE) {
        Ok(c) => panic!("config accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn localfs(dir: &str) -> BackendConfig {
    BackendConfig::LocalFs(LocalFsConfig { dir: Some(PathBuf::from(dir)), ..Default::default() })
}

fn localfs_of(config: &DaemonConfig) -> &LocalFsConfig {
    match &config.backend {
        BackendConfig::LocalFs(c) => c,
        other => panic!("not localfs: {other:?}"),
    }
}

/// A v1 file, with `extra` spliced in at the top level.
fn v1_with(extra: &str) -> String {
    format!(
        r#"{{
  "device": {{
    "backend": {{ "type": "localfs", "config": {{ "dir": "/var/lib/nydus/blobs" }} }},
    "cache": {{ "type": "blobcache", "config": {{ "work_dir": "/var/lib/nydus/cache" }} }}
  }},
  {extra}
  "mode": "direct"
}}"#
    )
}

// --- upstream samples ---------------------------------------------------

/// docs/nydusd.md, "Run Nydusd Daemon".
const UPSTREAM_V1_LOCALFS: &str = r#"{
  "device": {
    "backend": {
      "type": "localfs",
      "config": {
        "dir": "/var/lib/nydus/blobs"
      }
    },
    "cache": {
      "type": "blobcache",
      "config": {
        "work_dir": "/var/lib/nydus/cache"
      }
    }
  },
  "mode": "direct",
  "digest_validate": false,
  "iostats_files": false,
  "enable_xattr": true
}"#;

#[test]
fn upstream_v1_localfs_sample() {
    let config = load_clean(UPSTREAM_V1_LOCALFS);
    assert_eq!(config, load_clean(&format!("\u{feff}{UPSTREAM_V1_LOCALFS}")), "byte-order mark");
    let cache = CacheConfig {
        kind: CacheKind::Blobcache,
        work_dir: PathBuf::from("/var/lib/nydus/cache"),
        amplify_io: 1 << 20,
        ..Default::default()
    };
    let prefetch = PrefetchConfig { threads_count: 8, merging_size: 1 << 20, prefetch_all: true, ..Default::default() };
    let fs = FsConfig { mode: "direct".into(), enable_xattr: true, prefetch, ..Default::default() };
    let expected = DaemonConfig { id: None, backend: localfs("/var/lib/nydus/blobs"), cache, fs };
    assert_eq!(config, expected);
}

/// misc/configs/nydusd-config.json: a registry backend.
const UPSTREAM_V1_REGISTRY: &str = r#"{
  "device": {
    "backend": {
      "type": "registry",
      "config": {
        "timeout": 5,
        "connect_timeout": 5,
        "retry_limit": 2,
        "skip_verify": false,
        "ca_cert_files": ["/etc/ssl/certs/my-ca.pem"]
      }
    },
    "cache": {
      "type": "blobcache",
      "config": {
        "work_dir": "/var/lib/nydus/cache"
      }
    }
  },
  "mode": "direct",
  "digest_validate": false,
  "iostats_files": false,
  "enable_xattr": true,
  "fs_prefetch": {
    "enable": true,
    "threads_count": 8,
    "merging_size": 1048576,
    "prefetch_all": true
  }
}"#;

#[test]
fn upstream_v1_registry_sample() {
    // The sample leaves out `host` and `repo`, which upstream requires too.
    assert_eq!(
        error(UPSTREAM_V1_REGISTRY),
        "/etc/nydus/c.json: device.backend.config.host: required key is missing; add it (see docs/nydusd-config.md)"
    );
    let text = UPSTREAM_V1_REGISTRY.replace(
        r#""timeout": 5,"#,
        r#""host": "reg.example:5000", "repo": "library/ubuntu", "scheme": "http", "timeout": 5,"#,
    );
    let config = load_clean(&text);
    assert!(config.fs.prefetch.enable);
    assert_eq!(
        config.backend,
        BackendConfig::Registry(RegistryConfig {
            scheme: "http".into(),
            host: "reg.example:5000".into(),
            repo: "library/ubuntu".into(),
            auth: None,
            registry_token: None,
            blob_url_scheme: String::new(),
            blob_redirected_host: String::new(),
            mirrors: Vec::new(),
            http: HttpConfig {
                timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                retry_limit: 2,
                skip_verify: false,
                ca_cert_files: vec![PathBuf::from("/etc/ssl/certs/my-ca.pem")],
                ..Default::default()
            },
        })
    );
}

fn registry_of(config: &DaemonConfig) -> &RegistryConfig {
    match &config.backend {
        BackendConfig::Registry(c) => c,
        other => panic!("not registry: {other:?}"),
    }
}

fn v2_registry(section: &str) -> String {
    format!("version = 2\n[backend]\ntype = \"registry\"\n[backend.registry]\n{section}\n")
}

#[test]
fn v2_registry_section() {
    // base64 of "user:pass"
    let text = v2_registry(
        r#"host = "127.0.0.1:5000"
repo = "a/b"
auth = "dXNlcjpwYXNz"
registry_token = "tok"
blob_url_scheme = "http"
blob_redirected_host = "cdn.example"
timeout = 7
connect_timeout = 2
retry_limit = 3
skip_verify = true"#,
    );
    let config = load_clean(&text);
    let r = registry_of(&config);
    assert_eq!(r.scheme, "https");
    assert_eq!((r.host.as_str(), r.repo.as_str()), ("127.0.0.1:5000", "a/b"));
    assert_eq!(r.auth, Some(Secret::new("dXNlcjpwYXNz")));
    assert_eq!(r.registry_token, Some(Secret::new("tok")));
    assert_eq!((r.blob_url_scheme.as_str(), r.blob_redirected_host.as_str()), ("http", "cdn.example"));
    assert_eq!(r.http.timeout, Duration::from_secs(7));
    assert_eq!(r.http.connect_timeout, Duration::from_secs(2));
    assert_eq!(r.http.retry_limit, 3);
    assert!(r.http.skip_verify);
    // Credentials never show in Debug output (configurations get logged).
    let dbg = format!("{config:?}");
    assert!(!dbg.contains("dXNlcjpwYXNz") && !dbg.contains("\"tok\""), "{dbg}");

    // Unknown keys are warnings with their path; sections of other kinds are ignored.
    let (_, warnings) =
        load(&format!("{}bogus = 1\n[backend.s3]\nwhatever = 1\n", v2_registry("host = \"h\"\nrepo = \"r\"")));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("/etc/nydus/c.json: backend.registry.bogus: unknown key"), "{warnings:?}");
}

#[test]
fn registry_errors_name_the_key() {
    let cases = [
        ("repo = \"r\"", "backend.registry.host: required key is missing"),
        ("host = \"h\"", "backend.registry.repo: required key is missing"),
        ("host = \"h/x\"\nrepo = \"r\"", "backend.registry.host: must be the registry's host name"),
        ("host = \"h\"\nrepo = \"../r\"", "backend.registry.repo: must be a repository name"),
        ("host = \"h\"\nrepo = \"r\"\nscheme = \"ftp\"", "backend.registry.scheme: `ftp` is not a registry scheme"),
        ("host = \"h\"\nrepo = \"r\"\ntimeout = 0", "backend.registry.timeout: 0 seconds is out of range"),
        ("host = \"h\"\nrepo = \"r\"\nretry_limit = 300", "backend.registry.retry_limit: invalid value"),
        (
            "host = \"h\"\nrepo = \"r\"\nauth = \"user:secretpw\"",
            "backend.registry.auth: must be base64 of `user:password`",
        ),
        (
            "host = \"h\"\nrepo = \"r\"\n[backend.registry.proxy]\nurl = \"ftp://p\"",
            "backend.registry.proxy.url: `ftp://p` is not an http(s) proxy address",
        ),
        (
            "host = \"h\"\nrepo = \"r\"\n[[backend.registry.mirrors]]\nhost = \"m\"\nfailure_limit = 0",
            "backend.registry.mirrors[0].failure_limit: must be at least 1",
        ),
    ];
    for (section, want) in cases {
        let e = error(&v2_registry(section));
        assert!(e.starts_with(&format!("/etc/nydus/c.json: {want}")), "{section:?}: {e}");
        assert!(!e.contains("secretpw"), "{e}");
    }
    let e = error(r#"{"device": {"backend": {"type": "registry"}}, "mode": "direct"}"#);
    assert!(e.starts_with("/etc/nydus/c.json: device.backend.config.host: required key is missing"), "{e}");
    let e = error("version = 2\n[backend]\ntype = \"registry\"\n");
    assert!(e.starts_with("/etc/nydus/c.json: backend.registry: missing; the registry backend needs"), "{e}");
}

#[test]
fn registry_mirrors_and_proxy_v2() {
    let (config, warnings) = load(&v2_registry(
        r#"host = "h"
repo = "r"
[backend.registry.proxy]
url = "http://127.0.0.1:65001"
ping_url = "http://127.0.0.1:65001/server/ping"
check_interval = 3
use_http = true
[[backend.registry.mirrors]]
host = "http://127.0.0.1:5001"
headers = { "X-Dragonfly-Registry" = "https://h" }
health_check_interval = 2
failure_limit = 3
[[backend.registry.mirrors]]
host = "mirror.example:5000"
auth_through = true
"#,
    ));
    let r = registry_of(&config);
    assert_eq!(
        r.mirrors,
        vec![
            MirrorConfig {
                host: "http://127.0.0.1:5001".into(),
                headers: vec![("X-Dragonfly-Registry".into(), "https://h".into())],
                health_check_interval: Duration::from_secs(2),
                failure_limit: 3,
            },
            MirrorConfig {
                host: "mirror.example:5000".into(),
                headers: vec![],
                health_check_interval: Duration::from_secs(5),
                failure_limit: 5,
            },
        ]
    );
    assert_eq!(
        r.http.proxy,
        Some(ProxyConfig {
            url: "http://127.0.0.1:65001".into(),
            ping_url: Some("http://127.0.0.1:65001/server/ping".into()),
            fallback: true,
            check_interval: Duration::from_secs(3),
            use_http: true,
        })
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("backend.registry.mirrors[1].auth_through: ignored"), "{warnings:?}");

    // Upstream's sample writes the proxy without a scheme.
    let text = UPSTREAM_V2_TOML.replace("type = \"localfs\"", "type = \"oss\"").replace("my_bucket_name", "my-bucket");
    let (config, _) = load(&text);
    let BackendConfig::Oss(oss) = &config.backend else { panic!("{:?}", config.backend) };
    let p = oss.http.proxy.as_ref().unwrap();
    assert_eq!((p.url.as_str(), p.ping_url.as_deref()), ("http://localhost:6789", Some("http://localhost:6789/ping")));
}

#[test]
fn registry_mirrors_and_proxy_v1() {
    let config = load_clean(
        r#"{"device": {"backend": {"type": "registry", "config": {"host": "h", "repo": "r",
            "mirrors": [{"host": "http://127.0.0.1:5001", "headers": {"X-A": "1"}}],
            "proxy": {"url": "http://127.0.0.1:65001", "fallback": false}}}}, "mode": "direct"}"#,
    );
    let r = registry_of(&config);
    assert_eq!(r.mirrors.len(), 1);
    assert_eq!(r.mirrors[0].headers, [("X-A".to_string(), "1".to_string())]);
    assert_eq!((r.mirrors[0].failure_limit, r.mirrors[0].health_check_interval), (5, Duration::from_secs(5)));
    let p = r.http.proxy.as_ref().unwrap();
    assert_eq!((p.url.as_str(), p.fallback, p.ping_url.as_deref()), ("http://127.0.0.1:65001", false, None));
    let e = error(
        r#"{"device": {"backend": {"type": "registry", "config": {"host": "h", "repo": "r",
            "mirrors": [{"host": "http://m/x"}]}}}, "mode": "direct"}"#,
    );
    assert!(e.starts_with("/etc/nydus/c.json: device.backend.config.mirrors[0].host: `http://m/x` is not"), "{e}");
}

/// misc/configs/nydusd-config-v2.toml, kept whole (with its
/// `backend.registy` typo and its cache-level encryption keys).
const UPSTREAM_V2_TOML: &str = r#"
# Configuration file for Nydus Image Service
version = 2
id = "my_id"

[backend]
type = "localfs"

[backend.localfs]
blob_file = "/tmp/nydus.blob.data"
dir = "/tmp"
alt_dirs = ["/var/nydus/cache"]

[backend.oss]
scheme = "http"
endpoint = "my_endpoint"
bucket_name = "my_bucket_name"
object_prefix = "my_object_prefix"
access_key_id = "my_access_key_id"
access_key_secret = "my_access_key_secret"
skip_verify = true
timeout = 10
connect_timeout = 10
retry_limit = 5

[backend.oss.proxy]
url = "localhost:6789"
ping_url = "localhost:6789/ping"
fallback = true
check_interval = 5
use_http = false

[backend.registy]
scheme = "https"
host = "my.registry.com"
repo = "nydus"
auth = "base64_encoded"
skip_verify = true
timeout = 10
connect_timeout = 10
retry_limit = 5
registry_token = "bear_token"
blob_url_scheme = "https"
blob_redirected_host = "redirect.registry.com"

[backend.registry.proxy]
url = "localhost:6789"
ping_url = "localhost:6789/ping"
fallback = true
check_interval = 5
use_http = false

[cache]
type = "filecache"
compressed = true
validate = true
enable_encryption = true
enable_convergent_encryption = true
encryption_key = "fc4a7db5614afc2f400e9478bebed1aefdbc9d7cd03210b84f144683a7a6fd1a"

[cache.filecache]
work_dir = "."

[cache.fscache]
work_dir = "."

[cache.prefetch]
enable = true
threads = 8
batch_size = 1000000
bandwidth_limit = 10000000

[rafs]
mode = "direct"
batch_size = 1000000
validate = true
enable_xattr = true
iostats_files = false
access_pattern = false
latest_read_files = false

[rafs.prefetch]
enable = true
threads = 8
batch_size = 1000000
bandwidth_limit = 10000000
prefetch_all = true
"#;

#[test]
fn upstream_v2_toml_sample() {
    let (config, warnings) = load(UPSTREAM_V2_TOML);
    assert_eq!(config.id.as_deref(), Some("my_id"));
    let lfs = localfs_of(&config);
    assert_eq!(lfs.dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(lfs.blob_file.as_deref(), Some(Path::new("/tmp/nydus.blob.data")));
    assert_eq!(lfs.alt_dirs, vec![PathBuf::from("/var/nydus/cache")]);
    assert_eq!(config.cache.kind, CacheKind::Blobcache);
    assert_eq!(config.cache.work_dir, PathBuf::from("."));
    assert!(config.cache.digest_validate);
    assert_eq!(config.cache.amplify_io, 1_000_000);
    assert_eq!(config.cache.max_size, None);
    assert_eq!(config.fs.mode, "direct");
    assert!(config.fs.digest_validate);
    assert!(config.fs.enable_xattr);
    #[allow(clippy::needless_update)]
    let prefetch = PrefetchConfig {
        enable: true,
        threads_count: 8,
        merging_size: 1_000_000,
        bandwidth_rate: 10_000_000,
        prefetch_all: true,
        ..Default::default()
    };
    assert_eq!(config.fs.prefetch, prefetch);

    let keys: Vec<&str> = warnings.iter().map(|w| w.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        keys,
        [
            "backend.registy",
            "cache.compressed",
            "cache.enable_convergent_encryption",
            "cache.enable_encryption",
            "cache.encryption_key",
        ],
        "{warnings:#?}"
    );
    assert_eq!(warnings[1], "/etc/nydus/c.json: cache.compressed: ignored: cached data is always stored uncompressed");
}

/// docs/nydusd.md's overlay example, minus the overlay, and with
/// `backend.localfs` as a section (the doc wrongly gives it a string).
const UPSTREAM_V2_JSON: &str = r#"{
  "version": 2,
  "backend": {
    "type": "localfs",
    "localfs": { "dir": "/var/lib/nydus/blobs" }
  },
  "cache": {
    "type": "blobcache",
    "filecache": { "work_dir": "/var/lib/nydus/cache" }
  },
  "rafs": {
    "mode": "direct",
    "enable_xattr": false
  }
}"#;

#[test]
fn v2_json() {
    let config = load_clean(UPSTREAM_V2_JSON);
    assert_eq!(config.backend, localfs("/var/lib/nydus/blobs"));
    assert_eq!(config.cache.kind, CacheKind::Blobcache);
    assert_eq!(config.cache.work_dir, PathBuf::from("/var/lib/nydus/cache"));
    assert!(!config.fs.enable_xattr);
    assert!(!config.fs.prefetch.enable);
    assert!(!config.fs.prefetch.prefetch_all, "v2's prefetch_all defaults to off");
}

#[test]
fn v2_json_doc_overlay_example_is_refused() {
    let text =
        UPSTREAM_V2_JSON.replace(r#""rafs": {"#, r#""overlay": { "upper_dir": "/u", "work_dir": "/w" }, "rafs": {"#);
    assert_eq!(
        error(&text),
        "/etc/nydus/c.json: overlay: a writable overlay is not supported; remove the `overlay` section; \
         the filesystem is served read-only (use overlayfs on top for writes)"
    );
    // The doc's `"localfs": "/var/lib/nydus/blobs"` is a type error.
    let text = UPSTREAM_V2_JSON.replace(r#"{ "dir": "/var/lib/nydus/blobs" }"#, r#""/var/lib/nydus/blobs""#);
    assert!(
        error(&text).starts_with(
            "/etc/nydus/c.json: backend.localfs: invalid type: string \"/var/lib/nydus/blobs\", \
             expected a section of localfs settings (`dir`, `blob_file`, `alt_dirs`); fix the value"
        ),
        "{}",
        error(&text)
    );
}

#[test]
fn v2_toml_minimal_and_defaults() {
    let config = load_clean(
        r#"
version = 2
[backend]
type = "localfs"
localfs.dir = "/blobs"
[cache]
type = "blobcache"
filecache.work_dir = "/cache"
filecache.max_size = "10GiB"
"#,
    );
    assert_eq!(config.id, None);
    assert_eq!(config.cache.max_size, Some(10 << 30));
    assert_eq!(config.cache.amplify_io, 1 << 20);
    assert_eq!(config.fs.mode, "direct");
    assert!(config.fs.enable_xattr, "our default, unlike upstream's");
    assert!(!config.fs.digest_validate);
}

#[test]
fn v2_without_cache_or_rafs() {
    let config = load_clean("version = 2\nbackend.type = \"localfs\"\nbackend.localfs.blob_file = \"/b\"\n");
    assert_eq!(config.cache.kind, CacheKind::Dummy);
    assert_eq!(config.fs.mode, "direct");
    assert_eq!(localfs_of(&config).blob_file.as_deref(), Some(Path::new("/b")));
    assert_eq!(localfs_of(&config).dir, None);
}

#[test]
fn v2_prefetch_aliases_and_cache_prefetch() {
    let (config, warnings) = load(
        r#"
version = 2
backend = { type = "localfs", localfs = { dir = "/b" } }
cache = { type = "dummycache", prefetch = { enable = true, threads = 2 } }
[rafs.prefetch]
enable = true
threads_count = 3
merging_size = 65536
bandwidth_rate = 1000
"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.fs.prefetch.threads_count, 3);
    assert_eq!(config.fs.prefetch.merging_size, 65536);
    assert_eq!(config.fs.prefetch.bandwidth_rate, 1000);

    let (config, warnings) = load(
        "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\" } }\ncache.prefetch.enable = true\n",
    );
    assert!(!config.fs.prefetch.enable);
    assert_eq!(
        warnings,
        ["/etc/nydus/c.json: cache.prefetch.enable: has no effect without `rafs.prefetch.enable = true`, \
          which starts prefetching"]
    );
}

// --- v1 details ---------------------------------------------------------

#[test]
fn v1_full() {
    let (config, warnings) = load(
        r#"{
  "device": {
    "id": "instance-1",
    "backend": {
      "type": "localfs",
      "config": { "dir": "/blobs", "alt_dirs": ["/a", "/b"], "readahead": true, "readahead_sec": 10 }
    },
    "cache": {
      "type": "filecache",
      "compressed": false,
      "validate": true,
      "config": { "work_dir": "/cache", "disable_indexed_map": false, "max_size": 1073741824 }
    }
  },
  "mode": "cached",
  "digest_validate": false,
  "iostats_files": true,
  "enable_xattr": false,
  "amplify_io": 131072,
  "access_pattern": true,
  "latest_read_files": false,
  "fs_prefetch": { "enable": true, "threads_count": 4, "merging_size": 131072, "bandwidth_rate": 1048576, "prefetch_all": false }
}"#,
    );
    assert_eq!(config.id.as_deref(), Some("instance-1"));
    assert_eq!(localfs_of(&config).alt_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(config.cache.max_size, Some(1 << 30));
    assert_eq!(config.cache.amplify_io, 131072);
    assert!(config.cache.digest_validate, "device.cache.validate turns validation on");
    assert!(config.fs.digest_validate);
    assert_eq!(config.fs.mode, "cached");
    assert!(config.fs.iostats_files);
    assert!(!config.fs.enable_xattr);
    let p = &config.fs.prefetch;
    assert!(p.enable && !p.prefetch_all);
    assert_eq!((p.threads_count, p.merging_size, p.bandwidth_rate), (4, 131072, 1 << 20));
    assert_eq!(
        warnings,
        [
            "/etc/nydus/c.json: access_pattern: not supported yet; ignored",
            "/etc/nydus/c.json: device.backend.config.readahead: has no effect (upstream ignores it too); remove it",
        ]
    );
}

#[test]
fn v1_digest_validate_reaches_cache_and_fs() {
    let config = load_clean(&v1_with(r#""digest_validate": true,"#));
    assert!(config.cache.digest_validate && config.fs.digest_validate);
}

#[test]
fn v1_cache_kinds() {
    for (kind, expected) in [("blobcache", CacheKind::Blobcache), ("filecache", CacheKind::Blobcache)] {
        let text = UPSTREAM_V1_LOCALFS.replace("\"blobcache\"", &format!("\"{kind}\""));
        assert_eq!(load_clean(&text).cache.kind, expected);
    }
    let text = r#"{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct"}"#;
    assert_eq!(load_clean(text).cache.kind, CacheKind::Dummy, "no cache section: no cache");
    let text = r#"{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
                   "cache": {"type": "dummycache", "config": {"work_dir": "/c"}}}, "mode": "direct"}"#;
    let (config, warnings) = load(text);
    assert_eq!(config.cache.kind, CacheKind::Dummy);
    assert_eq!(warnings, ["/etc/nydus/c.json: device.cache.config: ignored: the cache type is dummycache (no cache)"]);
    assert_eq!(
        error(&UPSTREAM_V1_LOCALFS.replace("\"blobcache\"", "\"memcache\"")),
        "/etc/nydus/c.json: device.cache.type: unknown cache type `memcache`; \
         use \"blobcache\" (or \"filecache\") or \"dummycache\""
    );
}

#[test]
fn v1_compressed_cache_warns() {
    let text = UPSTREAM_V1_LOCALFS.replace(r#""type": "blobcache","#, r#""type": "blobcache", "compressed": true,"#);
    let (_, warnings) = load(&text);
    assert_eq!(
        warnings,
        ["/etc/nydus/c.json: device.cache.compressed: ignored: cached data is always stored uncompressed"]
    );
}

#[test]
fn v1_in_toml_and_version_1() {
    let config = load_clean(
        r#"
version = 1
mode = "direct"
[device.backend]
type = "localfs"
config.dir = "/blobs"
"#,
    );
    assert_eq!(config.backend, localfs("/blobs"));
}

// --- unknown keys -------------------------------------------------------

#[test]
fn unknown_keys_are_warnings_with_paths() {
    let text = UPSTREAM_V1_LOCALFS
        .replace(r#""work_dir": "/var/lib/nydus/cache""#, r#""work_dir": "/var/lib/nydus/cache", "bogus": 1"#)
        .replace(r#""mode": "direct","#, r#""mode": "direct", "fs_prefetch": {"enable": false, "threads": 2},"#);
    let (config, warnings) = load(&text);
    assert_eq!(config.cache.work_dir, PathBuf::from("/var/lib/nydus/cache"));
    assert_eq!(
        warnings,
        [
            "/etc/nydus/c.json: device.cache.config.bogus: unknown key, ignored; \
             check its spelling and place against docs/nydusd-config.md",
            "/etc/nydus/c.json: fs_prefetch.threads: unknown key, ignored; \
             check its spelling and place against docs/nydusd-config.md",
        ]
    );
}

#[test]
fn unknown_keys_get_hints_for_the_other_format() {
    let (_, warnings) = load(
        r#"
version = 2
mode = "direct"
backend = { type = "localfs", localfs = { dir = "/b" } }
rafs = { user_io_batch_size = 4096 }
"#,
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("/etc/nydus/c.json: mode: unknown key, ignored; this is a v1 key"));
    assert!(warnings[1].ends_with("rafs.user_io_batch_size: unknown key, ignored; the v2 key is `rafs.batch_size`"));
}

// --- errors -------------------------------------------------------------

#[test]
fn wrong_types_name_the_key() {
    let text = UPSTREAM_V1_LOCALFS.replace(r#""/var/lib/nydus/cache""#, "5");
    assert_eq!(
        error(&text),
        "/etc/nydus/c.json: device.cache.config.work_dir: invalid type: integer `5`, expected a string; \
         fix the value (see docs/nydusd-config.md)"
    );
    let text = v1_with(r#""fs_prefetch": { "threads_count": -1 },"#);
    assert!(error(&text).starts_with("/etc/nydus/c.json: fs_prefetch.threads_count: invalid value: integer `-1`"));
    let text = "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\", alt_dirs = [\"/a\", 3] } }\n";
    assert!(error(text).starts_with("/etc/nydus/c.json: backend.localfs.alt_dirs[1]: invalid type: integer `3`"));
    let text =
        "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\" } }\nrafs.enable_xattr = \"yes\"\n";
    assert!(error(text).starts_with("/etc/nydus/c.json: rafs.enable_xattr: invalid type: string \"yes\""));
}

#[test]
fn missing_required_keys() {
    let missing = |text: &str, key: &str| {
        let e = error(text);
        assert_eq!(e, format!("/etc/nydus/c.json: {key}: required key is missing; add it (see docs/nydusd-config.md)"));
    };
    missing(&UPSTREAM_V1_LOCALFS.replace(r#""mode": "direct","#, ""), "mode");
    missing(r#"{"mode": "direct"}"#, "device");
    missing(r#"{"device": {}, "mode": "direct"}"#, "device.backend");
    missing(r#"{"device": {"backend": {"config": {}}}, "mode": "direct"}"#, "device.backend.type");
    missing("version = 2\nbackend.localfs.dir = \"/b\"\n", "backend.type");

    assert_eq!(
        error("version = 2\n[rafs]\nmode = \"direct\"\n"),
        "/etc/nydus/c.json: backend: required section is missing; \
         add `backend.type = \"localfs\"` and `backend.localfs.dir`"
    );
    assert_eq!(
        error(r#"{"device": {"backend": {"type": "localfs"}}, "mode": "direct"}"#),
        "/etc/nydus/c.json: device.backend.config: localfs needs `dir` (the directory holding the blobs) \
         or `blob_file` (a single blob); set one of them"
    );
    assert_eq!(
        error("version = 2\nbackend.type = \"localfs\"\n"),
        "/etc/nydus/c.json: backend.localfs: missing; the localfs backend needs this section with `dir` or `blob_file`"
    );
    let work_dir_missing = "required key is missing; set it to the cache directory, e.g. \"/var/lib/nydus/cache\" \
                            (upstream silently used nydusd's current directory)";
    assert_eq!(
        error(&UPSTREAM_V1_LOCALFS.replace(r#""work_dir": "/var/lib/nydus/cache""#, "")),
        format!("/etc/nydus/c.json: device.cache.config.work_dir: {work_dir_missing}")
    );
    assert_eq!(
        error(
            "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\" } }\ncache.type = \"blobcache\"\n"
        ),
        "/etc/nydus/c.json: cache.filecache: missing; cache type `blobcache` needs it, \
         with `work_dir` naming the cache directory"
    );
    let v1_no_config = r#"{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}},
                           "cache": {"type": "blobcache"}}, "mode": "direct"}"#;
    assert!(error(v1_no_config).starts_with("/etc/nydus/c.json: device.cache.config: missing; cache type `blobcache`"));
}

#[test]
fn object_store_and_proxy_backends() {
    // v1: `device.backend.config`.
    let v1 = r#"{"device": {"backend": {"type": "s3", "config": {
        "endpoint": "127.0.0.1:9000", "scheme": "http", "region": "us-east-1", "bucket_name": "blobs",
        "object_prefix": "nydus/", "access_key_id": "AKIDEXAMPLE", "access_key_secret": "wJalrXUtnFEMI",
        "retry_limit": 3}}}, "mode": "direct"}"#;
    let config = load_clean(v1);
    let BackendConfig::S3(s3) = &config.backend else { panic!("{:?}", config.backend) };
    assert_eq!(
        (s3.endpoint.as_str(), s3.bucket_name.as_str(), s3.object_prefix.as_str()),
        ("127.0.0.1:9000", "blobs", "nydus/")
    );
    assert_eq!(s3.http.retry_limit, 3);
    assert_eq!(s3.credentials.as_ref().map(|k| k.secret.expose()), Some("wJalrXUtnFEMI"));
    let dbg = format!("{config:?}");
    assert!(!dbg.contains("wJalrXUtnFEMI") && !dbg.contains("AKIDEXAMPLE"), "{dbg}");

    // v2: `[backend.<type>]`; sections of other types are not read.
    let v2 = "version = 2\n[backend]\ntype = \"oss\"\n[backend.oss]\nendpoint = \"oss-cn-hangzhou.aliyuncs.com\"\n\
              bucket_name = \"my-bucket\"\nbogus = 1\n[backend.s3]\nwhatever = 1\n";
    let (config, warnings) = load(v2);
    let BackendConfig::Oss(oss) = &config.backend else { panic!("{:?}", config.backend) };
    assert_eq!((oss.scheme.as_str(), oss.bucket_name.as_str()), ("https", "my-bucket"));
    assert!(oss.credentials.is_none());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("/etc/nydus/c.json: backend.oss.bogus: unknown key"), "{warnings:?}");

    for section in ["http-proxy", "http_proxy"] {
        let text = format!(
            "version = 2\n[backend]\ntype = \"http-proxy\"\n[backend.{section}]\naddr = \"/run/blobs.sock\"\npath = \"/b\"\n"
        );
        let config = load_clean(&text);
        let BackendConfig::HttpProxy(h) = &config.backend else { panic!("{:?}", config.backend) };
        assert_eq!((&h.addr, h.path.as_str()), (&HttpProxyAddr::UnixSocket("/run/blobs.sock".into()), "/b"));
    }
    let config = load_clean(
        r#"{"device": {"backend": {"type": "http-proxy", "config": {"addr": "http://127.0.0.1:9977"}}}, "mode": "direct"}"#,
    );
    assert!(matches!(config.backend, BackendConfig::HttpProxy(HttpProxyConfig { addr: HttpProxyAddr::Url(_), .. })));
}

#[test]
fn backend_errors_name_the_key() {
    let cases = [
        (
            r#"{"device": {"backend": {"type": "s3", "config": {"region": "r"}}}, "mode": "direct"}"#,
            "device.backend.config.bucket_name: required key is missing",
        ),
        (
            r#"{"device": {"backend": {"type": "s3"}}, "mode": "direct"}"#,
            "device.backend.config.bucket_name: required key is missing",
        ),
        (
            r#"{"device": {"backend": {"type": "oss", "config": {"endpoint": "e", "bucket_name": "bkt", "access_key_secret": "s3cr3t"}}}, "mode": "direct"}"#,
            "device.backend.config.access_key_id: is empty while `access_key_secret` is set",
        ),
        ("version = 2\nbackend.type = \"s3\"\n", "backend.s3: missing; the s3 backend needs this section"),
        (
            "version = 2\nbackend.type = \"http-proxy\"\nbackend.http-proxy.addr = \"localhost:80\"\n",
            "backend.http-proxy.addr: `localhost:80` is neither",
        ),
        (
            "version = 2\nbackend.type = \"oss\"\nbackend.oss = { endpoint = \"e\", bucket_name = \"b\" }\n",
            "backend.oss.bucket_name: `b` is not a bucket name",
        ),
    ];
    for (text, want) in cases {
        let e = error(text);
        assert!(e.starts_with(&format!("/etc/nydus/c.json: {want}")), "{want}: {e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }
    assert!(error("version = 2\nbackend.type = \"localdisk\"\n")
        .starts_with("/etc/nydus/c.json: backend.type: backend type `localdisk` is not supported; use `localfs`"));
    assert_eq!(
        error("version = 2\nbackend.type = \"ftp\"\n"),
        "/etc/nydus/c.json: backend.type: unknown backend type `ftp`; use \"localfs\", \"registry\", \"s3\", \"oss\" or \"http-proxy\""
    );
}

#[test]
fn unsupported_cache_features() {
    assert_eq!(
        error(&UPSTREAM_V1_LOCALFS.replace("\"blobcache\"", "\"fscache\"")),
        "/etc/nydus/c.json: device.cache.type: cache type `fscache` is not supported; it needs the kernel's \
         cachefiles on-demand mode, which nydusd cannot use; use \"blobcache\""
    );
    let text = UPSTREAM_V2_TOML
        .replace("work_dir = \".\"\n\n[cache.fscache]", "work_dir = \".\"\nenable_encryption = true\n[cache.fscache]");
    assert!(error(&text).starts_with(
        "/etc/nydus/c.json: cache.filecache.enable_encryption: cache encryption is not supported; set it to false"
    ));
}

#[test]
fn out_of_range_values() {
    let text = v1_with(r#""fs_prefetch": { "enable": true, "threads_count": 0 },"#);
    assert_eq!(
        error(&text),
        "/etc/nydus/c.json: fs_prefetch.threads_count: 0 prefetch threads is out of range; use 1 to 1024 (default 8)"
    );
    // Disabled prefetch is not checked, as upstream.
    load_clean(&v1_with(r#""fs_prefetch": { "enable": false, "threads_count": 0 },"#));
    assert!(error(&v1_with(r#""amplify_io": 268435457,"#)).starts_with(
        "/etc/nydus/c.json: amplify_io: 268435457 bytes is more than the largest batch, 268435456 (256 MiB)"
    ));
    let text = "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\" } }\n\
                rafs.prefetch = { enable = true, batch_size = 300000000 }\n";
    assert!(error(text).starts_with("/etc/nydus/c.json: rafs.prefetch.batch_size: 300000000 bytes"));
    assert_eq!(
        error(&v1_with("").replace(r#""mode": "direct""#, r#""mode": "lazy""#)),
        "/etc/nydus/c.json: mode: unknown mode `lazy`; use \"direct\" or \"cached\""
    );
}

#[test]
fn max_size() {
    let with = |v: &str| {
        UPSTREAM_V1_LOCALFS.replace(
            r#""work_dir": "/var/lib/nydus/cache""#,
            &format!(r#""work_dir": "/var/lib/nydus/cache", "max_size": {v}"#),
        )
    };
    assert_eq!(load_clean(&with("4096")).cache.max_size, Some(4096));
    assert_eq!(load_clean(&with(r#""512 MiB""#)).cache.max_size, Some(512 << 20));
    assert_eq!(load_clean(&with(r#""2GB""#)).cache.max_size, Some(2_000_000_000));
    assert_eq!(
        error(&with(r#""10 parsecs""#)),
        "/etc/nydus/c.json: device.cache.config.max_size: invalid value: string \"10 parsecs\", expected a size \
         in bytes, such as 10737418240 or \"10GiB\"; fix the value (see docs/nydusd-config.md)"
    );
    assert!(error(&with("0")).starts_with("/etc/nydus/c.json: device.cache.config.max_size: 0 would leave no room"));
    assert!(error(&with("-5")).contains("invalid value: integer `-5`"));
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_byte_size("0"), Some(0));
    assert_eq!(parse_byte_size(" 7 "), Some(7));
    assert_eq!(parse_byte_size("1k"), Some(1024));
    assert_eq!(parse_byte_size("1KiB"), Some(1024));
    assert_eq!(parse_byte_size("1kB"), Some(1000));
    assert_eq!(parse_byte_size("3T"), Some(3 << 40));
    assert_eq!(parse_byte_size("1.5G"), None);
    assert_eq!(parse_byte_size("G"), None);
    assert_eq!(parse_byte_size("-1"), None);
    assert_eq!(parse_byte_size("99999999999TiB"), None, "overflow");
}

#[test]
fn versions() {
    assert_eq!(
        error(r#"{"version": 3}"#),
        "/etc/nydus/c.json: version: configuration format version 3 is not supported; write `version = 2` \
         for the v2 format, or leave `version` out for the v1 JSON format"
    );
    assert!(error(r#"{"version": "2"}"#).contains("configuration format version \"2\" is not supported"));
    assert_eq!(
        error("[backend]\ntype = \"localfs\"\n"),
        "/etc/nydus/c.json: version: missing: the file has v2 sections (`backend`, `cache`, `rafs`); \
         add `version = 2` at the top"
    );
    let (_, warnings) = load(&UPSTREAM_V2_JSON.replace(r#""version": 2,"#, r#""version": 2, "device": {},"#));
    assert!(warnings[0].starts_with("/etc/nydus/c.json: device: unknown key, ignored; `device` is a v1 section"));
}

#[test]
fn syntax_errors() {
    assert_eq!(
        error("{\n  \"mode\": \"direct\",\n}\n"),
        "/etc/nydus/c.json:3:1: not valid JSON: trailing comma; fix the syntax \
         (a file starting with `{` is read as JSON, anything else as TOML)"
    );
    let e = error("version = 2\n[backend\n");
    assert!(e.starts_with("/etc/nydus/c.json:2:9: not valid TOML: "), "{e}");
    assert_eq!(
        error("[1, 2]"),
        "/etc/nydus/c.json: <top level>: expected an object of configuration keys; see docs/nydusd-config.md"
    );
    // An empty file is an empty TOML document: a v1 file without `device`.
    assert!(error("").starts_with("/etc/nydus/c.json: device: required key is missing"));
}

// --- files and -D -------------------------------------------------------

#[test]
fn load_file_json_and_toml() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("nydusd.json");
    std::fs::write(&json, UPSTREAM_V1_LOCALFS).unwrap();
    let (config, _) = load_file(&json).unwrap();
    assert_eq!(config.backend, localfs("/var/lib/nydus/blobs"));

    let toml = dir.path().join("nydusd.toml");
    std::fs::write(&toml, "version = 2\nbackend = { type = \"localfs\", localfs = { dir = \"/b\" } }\nbogus = 1\n")
        .unwrap();
    let (config, warnings) = load_file(&toml).unwrap();
    assert_eq!(config.backend, localfs("/b"));
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].starts_with(&format!("{}: bogus: unknown key", toml.display())));
}

#[test]
fn load_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let e = load_file(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().starts_with(&format!("{}: cannot read the configuration file: ", missing.display())));
    assert!(e.to_string().ends_with("; check the path and its permissions"));

    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    assert_eq!(
        load_file(&big).unwrap_err().to_string(),
        format!(
            "{}: the file has 1048577 bytes, more than the 1 MiB a configuration file may have; \
             check that --config names the configuration file",
            big.display()
        )
    );
}

#[test]
fn localfs_dir() {
    let config = localfs_dir_config(Path::new("/var/lib/nydus/blobs"));
    assert_eq!(config.id, None);
    assert_eq!(config.backend, localfs("/var/lib/nydus/blobs"));
    assert_eq!(config.cache.kind, CacheKind::Blobcache);
    assert_eq!(config.cache.work_dir, PathBuf::from("/var/lib/nydus/blobs"));
    assert!(!config.cache.digest_validate);
    assert_eq!(config.cache.max_size, None);
    assert_eq!(config.fs.mode, "direct");
    assert!(!config.fs.digest_validate && !config.fs.iostats_files);
    assert!(!config.fs.prefetch.enable);
    // The same as the file upstream's -D stands for.
    let file = load_clean(
        r#"{"device": {"backend": {"type": "localfs", "config": {"dir": "/var/lib/nydus/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "/var/lib/nydus/blobs"}}},
            "mode": "direct", "digest_validate": false, "iostats_files": false}"#,
    );
    assert_eq!(config.backend, file.backend);
    assert_eq!(config.cache, file.cache);
    assert_eq!((config.fs.mode.as_str(), config.fs.enable_xattr), (file.fs.mode.as_str(), file.fs.enable_xattr));
}

#[test]
fn error_display() {
    let e = ConfigError::Invalid { file: "f".into(), key: "a.b".into(), message: "bad".into() };
    assert_eq!(e.to_string(), "f: a.b: bad");
    let e = ConfigError::Unsupported { file: "f".into(), key: "k".into(), feature: "x".into(), hint: "do y".into() };
    assert_eq!(e.to_string(), "f: k: x is not supported; do y");
}

#[test]
fn documented_examples_load_without_warnings() {
    let doc = include_str!("../../../docs/nydusd-config.md");
    let mut blocks = 0;
    for fence in ["```json\n", "```toml\n"] {
        for part in doc.split(fence).skip(1) {
            let text = part.split("```").next().unwrap();
            let (config, warnings) = parse_str(text, "doc").unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
            assert!(warnings.is_empty(), "{warnings:?}\nin:\n{text}");
            assert!(!format!("{config:?}").contains("EXAMPLEKEY"), "a secret leaked into Debug");
            blocks += 1;
        }
    }
    assert_eq!(blocks, 10);
}
