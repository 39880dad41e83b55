//! The route table: one `match` from (method, path) to a typed [`ApiRequest`].

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{ApiResponse, BuildRequest, DaemonConf, MountCmd};

/// Which metrics a `/api/v1/metrics…` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsKind {
    /// `/api/v1/metrics`: filesystem op counters and latencies.
    Global,
    /// `/api/v1/metrics/files`: per-file statistics.
    Files,
    /// `/api/v1/metrics/pattern`: access pattern.
    Pattern,
    /// `/api/v1/metrics/backend`: backend counters.
    Backend,
    /// `/api/v1/metrics/blobcache`: blob cache counters.
    BlobCache,
    /// `/api/v1/metrics/inflight`: requests in progress.
    Inflight,
}

/// A parsed API request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `GET /api/v1/daemon`.
    DaemonInfo,
    /// `PUT /api/v1/daemon`: change settings at run time.
    ConfigureDaemon(DaemonConf),
    /// `GET /api/v1/daemon/events`.
    Events,
    /// `PUT /api/v1/daemon/exit`.
    Exit,
    /// `GET /api/v1/daemon/backend?mountpoint=`.
    Backend {
        /// The mount.
        mountpoint: String,
    },
    /// `POST /api/v1/mount?mountpoint=`.
    Mount {
        /// Where in the daemon's filesystem (`/` or `/sub/path`).
        mountpoint: String,
        /// What to mount.
        cmd: MountCmd,
    },
    /// `PUT /api/v1/mount?mountpoint=`: swap the image of a live mount.
    Remount {
        /// The mount.
        mountpoint: String,
        /// The new image.
        cmd: MountCmd,
    },
    /// `DELETE /api/v1/mount?mountpoint=`.
    Umount {
        /// The mount.
        mountpoint: String,
    },
    /// `GET /api/v1/metrics[/…]`.
    Metrics {
        /// Which metrics.
        kind: MetricsKind,
        /// The mount (`id` query parameter); all mounts when absent.
        id: Option<String>,
        /// `/files?latest=true`: only files read since the last such request.
        latest: bool,
    },
    /// `GET /api/v1/config`.
    GetConfig,
    /// `PUT /api/v1/config`.
    SetConfig(DaemonConf),
    /// `GET /api/v2/daemon`.
    DaemonInfoV2,
    /// `PUT /api/v2/daemon`.
    ConfigureDaemonV2(DaemonConf),
    /// `PUT /api/v2/blobs`: add a blob cache entry (fscache mode).
    CreateBlob(Value),
    /// `GET /api/v2/blobs[?id=]`.
    GetBlobs {
        /// Only this mount.
        id: Option<String>,
    },
    /// `DELETE /api/v2/blobs?blob_id=`.
    DeleteBlob {
        /// The blob.
        blob_id: String,
    },
    /// `POST /api/v1/build`.
    Build(BuildRequest),
    /// `GET /api/v1/build/{id}`.
    BuildStatus {
        /// The job id.
        id: String,
    },
    /// `GET /metrics` (Prometheus text).
    Prometheus,
}

/// Turn an HTTP request into an [`ApiRequest`], or the error response to send.
pub fn parse(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Result<ApiRequest, ApiResponse> {
    let q = Query::parse(query.unwrap_or(""))?;
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let metrics = |kind| Ok(ApiRequest::Metrics { kind, id: q.get("id"), latest: q.flag("latest") });
    let r = match (path, method) {
        ("/api/v1/daemon", "GET") => ApiRequest::DaemonInfo,
        ("/api/v1/daemon", "PUT") => ApiRequest::ConfigureDaemon(json(body)?),
        ("/api/v1/daemon/events", "GET") => ApiRequest::Events,
        ("/api/v1/daemon/exit", "PUT") => ApiRequest::Exit,
        ("/api/v1/daemon/backend", "GET") => ApiRequest::Backend { mountpoint: q.mountpoint()? },
        ("/api/v1/mount", "POST") => ApiRequest::Mount { mountpoint: q.mountpoint()?, cmd: json(body)? },
        ("/api/v1/mount", "PUT") => ApiRequest::Remount { mountpoint: q.mountpoint()?, cmd: json(body)? },
        ("/api/v1/mount", "DELETE") => ApiRequest::Umount { mountpoint: q.mountpoint()? },
        ("/api/v1/metrics", "GET") => return metrics(MetricsKind::Global),
        ("/api/v1/metrics/files", "GET") => return metrics(MetricsKind::Files),
        ("/api/v1/metrics/pattern", "GET") => return metrics(MetricsKind::Pattern),
        ("/api/v1/metrics/backend", "GET") => return metrics(MetricsKind::Backend),
        ("/api/v1/metrics/blobcache", "GET") => return metrics(MetricsKind::BlobCache),
        ("/api/v1/metrics/inflight", "GET") => return metrics(MetricsKind::Inflight),
        ("/api/v1/config", "GET") => ApiRequest::GetConfig,
        ("/api/v1/config", "PUT") => ApiRequest::SetConfig(json(body)?),
        ("/api/v2/daemon", "GET") => ApiRequest::DaemonInfoV2,
        ("/api/v2/daemon", "PUT") => ApiRequest::ConfigureDaemonV2(json(body)?),
        ("/api/v2/blobs", "PUT") => ApiRequest::CreateBlob(json(body)?),
        ("/api/v2/blobs", "GET") => ApiRequest::GetBlobs { id: q.get("id") },
        ("/api/v2/blobs", "DELETE") => ApiRequest::DeleteBlob { blob_id: q.require("blob_id")? },
        ("/api/v1/build", "POST") => ApiRequest::Build(json(body)?),
        ("/metrics", "GET") => ApiRequest::Prometheus,
        (p, "GET") if build_id(p).is_some() => ApiRequest::BuildStatus { id: build_id(p).unwrap_or_default() },
        (p, m) => {
            let known = ALLOWED.iter().find(|(path, _)| *path == p).map(|(_, ms)| *ms);
            let known = known.or_else(|| build_id(p).map(|_| "GET"));
            return Err(match known {
                Some(allowed) => ApiResponse::error(405, format!("{m} is not allowed on {p} (allowed: {allowed})")),
                None => ApiResponse::error(404, format!("no such API path: {p}")),
            });
        }
    };
    Ok(r)
}

/// Every path and its methods (for 405 answers).
pub const ALLOWED: &[(&str, &str)] = &[
    ("/api/v1/daemon", "GET, PUT"),
    ("/api/v1/daemon/events", "GET"),
    ("/api/v1/daemon/exit", "PUT"),
    ("/api/v1/daemon/backend", "GET"),
    ("/api/v1/mount", "POST, PUT, DELETE"),
    ("/api/v1/metrics", "GET"),
    ("/api/v1/metrics/files", "GET"),
    ("/api/v1/metrics/pattern", "GET"),
    ("/api/v1/metrics/backend", "GET"),
    ("/api/v1/metrics/blobcache", "GET"),
    ("/api/v1/metrics/inflight", "GET"),
    ("/api/v1/config", "GET, PUT"),
    ("/api/v2/daemon", "GET, PUT"),
    ("/api/v2/blobs", "GET, PUT, DELETE"),
    ("/api/v1/build", "POST"),
    ("/metrics", "GET"),
];

fn build_id(path: &str) -> Option<String> {
    let id = path.strip_prefix("/api/v1/build/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then(|| id.to_string())
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiResponse::error(400, "the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiResponse::error(400, format!("invalid JSON body: {e}")))
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Self, ApiResponse> {
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode(k)?, decode(v)?));
        }
        Ok(Self(out))
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v == "true" || v == "1")
    }

    fn require(&self, key: &str) -> Result<String, ApiResponse> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiResponse::error(400, format!("missing query parameter `{key}`"))),
        }
    }

    fn mountpoint(&self) -> Result<String, ApiResponse> {
        let mp = self.require("mountpoint")?;
        if !mp.starts_with('/') || mp.split('/').any(|c| c == "." || c == "..") || mp.contains('\0') {
            return Err(ApiResponse::error(
                400,
                format!("mountpoint {mp:?} must be an absolute path without `.` or `..` components"),
            ));
        }
        // One spelling per path: `/a//b/` is `/a/b`.
        let parts: Vec<&str> = mp.split('/').filter(|c| !c.is_empty()).collect();
        Ok(format!("/{}", parts.join("/")))
    }
}

/// Percent-decoding (`+` is a space, as in forms).
fn decode(s: &str) -> Result<String, ApiResponse> {
    let bad = || ApiResponse::error(400, format!("malformed query string near {s:?}"));
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<ApiRequest, ApiResponse>) -> u16 {
        r.err().map_or(200, |e| e.status)
    }

    #[test]
    fn routes() {
        assert_eq!(parse("GET", "/api/v1/daemon", None, b""), Ok(ApiRequest::DaemonInfo));
        assert_eq!(parse("GET", "/api/v1/daemon/", None, b""), Ok(ApiRequest::DaemonInfo));
        let body = br#"{"source":"/b","fs_type":"rafs","config":"{}"}"#;
        let r = parse("POST", "/api/v1/mount", Some("mountpoint=%2Fsub%2Fa"), body).unwrap();
        assert!(matches!(r, ApiRequest::Mount { ref mountpoint, .. } if mountpoint == "/sub/a"));
        assert_eq!(
            parse("GET", "/api/v1/metrics/files", Some("id=/a&latest=true"), b""),
            Ok(ApiRequest::Metrics { kind: MetricsKind::Files, id: Some("/a".into()), latest: true })
        );
        assert_eq!(parse("GET", "/api/v1/build/job-3", None, b""), Ok(ApiRequest::BuildStatus { id: "job-3".into() }));
        let r = parse("DELETE", "/api/v1/mount", Some("mountpoint=//a//b/"), b"");
        assert_eq!(r, Ok(ApiRequest::Umount { mountpoint: "/a/b".into() }));
        let r = parse("DELETE", "/api/v1/mount", Some("mountpoint=/"), b"");
        assert_eq!(r, Ok(ApiRequest::Umount { mountpoint: "/".into() }));
    }

    #[test]
    fn errors_have_the_right_status() {
        assert_eq!(status(parse("GET", "/api/v1/nope", None, b"")), 404);
        assert_eq!(status(parse("DELETE", "/api/v1/daemon", None, b"")), 405);
        assert_eq!(status(parse("POST", "/api/v1/build/x", None, b"")), 405);
        assert_eq!(status(parse("DELETE", "/api/v1/mount", None, b"")), 400);
        assert_eq!(status(parse("DELETE", "/api/v1/mount", Some("mountpoint=rel"), b"")), 400);
        assert_eq!(status(parse("DELETE", "/api/v1/mount", Some("mountpoint=/a/../b"), b"")), 400);
        assert_eq!(status(parse("DELETE", "/api/v1/mount", Some("mountpoint=%zz"), b"")), 400);
        assert_eq!(status(parse("PUT", "/api/v1/daemon", None, b"{")), 400);
        assert_eq!(status(parse("PUT", "/api/v1/daemon", None, br#"{"log_level":1}"#)), 400);
        assert_eq!(status(parse("PUT", "/api/v1/daemon", None, br#"{"log_level":"info","x":1}"#)), 400);
        assert_eq!(status(parse("PUT", "/api/v1/daemon", None, b"")), 400);
    }
}
