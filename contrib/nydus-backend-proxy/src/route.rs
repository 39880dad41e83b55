//! Request paths → what is asked for.
//!
//! Blob URLs are `/<namespace>/<repo>/blobs/sha256:<id>` (upstream's
//! layout) or `/v2/<repo...>/blobs/sha256:<id>` (the OCI distribution
//! layout, so that nydusd's registry backend can use this server with
//! `scheme: http`). The repository part is not checked against anything:
//! every repository sees the same directory. The id must be 64 lower-case
//! hex digits, so it is always a plain file name inside the blob directory.

use thiserror::Error;

/// A request this server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`: the registry API version check.
    ApiVersion,
    /// A blob, by its hex sha256 id.
    Blob(String),
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    /// Not a blob URL (404).
    #[error("no such resource: blob URLs look like /<namespace>/<repo>/blobs/sha256:<id>")]
    NotFound,
    /// A blob URL whose digest cannot be a blob of ours (400).
    #[error("bad blob digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    BadDigest(String),
}

/// Parse a request path (without the query string).
pub fn route(path: &str) -> Result<Route, RouteError> {
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::ApiVersion);
    }
    let segs: Vec<&str> = path.strip_prefix('/').ok_or(RouteError::NotFound)?.split('/').collect();
    let n = segs.len();
    // At least one repository segment, then "blobs", then the digest.
    if n < 3 || segs[n - 2] != "blobs" {
        return Err(RouteError::NotFound);
    }
    let repo = &segs[..n - 2];
    if repo.iter().any(|s| s.is_empty() || *s == "." || *s == "..") || repo == ["v2"] {
        return Err(RouteError::NotFound);
    }
    let digest = segs[n - 1];
    match digest.strip_prefix("sha256:") {
        Some(id) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(Route::Blob(id.to_string()))
        }
        _ => Err(RouteError::BadDigest(digest.chars().take(100).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls() {
        let id = "0123456789abcdef".repeat(4);
        for p in [
            format!("/ns/repo/blobs/sha256:{id}"),
            format!("/v2/a/b/c/blobs/sha256:{id}"),
            format!("/r/blobs/sha256:{id}"),
        ] {
            assert_eq!(route(&p), Ok(Route::Blob(id.clone())), "{p}");
        }
        assert_eq!(route("/v2/"), Ok(Route::ApiVersion));
    }

    #[test]
    fn refused() {
        let id = "ab".repeat(32);
        for p in
            ["/", "/blobs/x", "", "/ns/repo/manifests/latest", "/ns//blobs/sha256:x", &format!("/v2/blobs/sha256:{id}")]
        {
            assert_eq!(route(p), Err(RouteError::NotFound), "{p}");
        }
        for d in ["sha256:..", "sha256:ABAB", "sha512:ab", &format!("sha256:{}", "AB".repeat(32)), &id] {
            let p = format!("/ns/repo/blobs/{d}");
            assert!(matches!(route(&p), Err(RouteError::BadDigest(_))), "{p}");
        }
        // Traversal attempts are not blob URLs at all.
        assert_eq!(route(&format!("/../x/blobs/sha256:{id}")), Err(RouteError::NotFound));
        assert_eq!(route("/ns/repo/blobs/sha256:../../etc/passwd"), Err(RouteError::NotFound));
    }
}
