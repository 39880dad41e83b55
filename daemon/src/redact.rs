//! What the API may say about a backend: an allow-list of non-secret fields. Registry
//! `auth`/`registry_token` and S3/OSS keys never leave the daemon.

use nydus_storage::{BackendConfig, HttpProxyAddr};
use serde_json::{json, Value};

/// `{"backend_type", "backend_config"}` without secrets (upstream's shape).
pub fn backend(b: &BackendConfig) -> Value {
    let (kind, cfg) = match b {
        BackendConfig::LocalFs(c) => {
            ("localfs", json!({ "dir": c.dir, "blob_file": c.blob_file, "alt_dirs": c.alt_dirs }))
        }
        BackendConfig::Registry(c) => (
            "registry",
            json!({ "scheme": c.scheme, "host": c.host, "repo": c.repo, "skip_verify": c.http.skip_verify,
                    "auth": c.auth.is_some().then_some("<redacted>"),
                    "registry_token": c.registry_token.is_some().then_some("<redacted>") }),
        ),
        BackendConfig::S3(c) => (
            "s3",
            json!({ "scheme": c.scheme, "endpoint": c.endpoint, "region": c.region, "bucket_name": c.bucket_name,
                    "object_prefix": c.object_prefix, "credentials": c.credentials.is_some().then_some("<redacted>") }),
        ),
        BackendConfig::Oss(c) => (
            "oss",
            json!({ "scheme": c.scheme, "endpoint": c.endpoint, "bucket_name": c.bucket_name,
                    "object_prefix": c.object_prefix, "credentials": c.credentials.is_some().then_some("<redacted>") }),
        ),
        BackendConfig::HttpProxy(c) => {
            let addr = match &c.addr {
                HttpProxyAddr::Url(u) => u.clone(),
                HttpProxyAddr::UnixSocket(p) => p.display().to_string(),
            };
            ("http-proxy", json!({ "addr": addr, "path": c.path }))
        }
    };
    json!({ "backend_type": kind, "backend_config": cfg })
}
