//! Pushing a blob to an OCI distribution registry.
//!
//! `HEAD /v2/<repo>/blobs/sha256:<id>` tells whether the blob is there
//! already. Otherwise `POST /v2/<repo>/blobs/uploads/` opens an upload
//! session whose URL comes back in `Location` (relative or absolute); a
//! small blob then goes in one `PUT <location>?digest=sha256:<id>`, a large
//! one in `PATCH` requests of [`CHUNK`] bytes (each with `Content-Range`,
//! each answered with the session's next `Location`) closed by an empty
//! `PUT ?digest=`.
//!
//! Registries address blobs by content, so the blob id must be the SHA-256
//! of the bytes: the digest is computed while the data is read and a
//! mismatch is refused before the upload is committed (the session is
//! cancelled). A transient failure anywhere restarts the push from a new
//! session, up to `retry_limit` times; the registry's credentials go only to
//! the registry's own origin.

use std::fs::File;
use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::Registry;
use crate::backend::check_blob_id;
use crate::backend::http::{redact, status_failure, transport_failure, Attempt, Failure};
use crate::backend::upload::{is_sha256_hex, read_piece, BlobUploader, DigestCheck};
use crate::config::RegistryConfig;
use crate::error::{Result, StorageError};

/// Bytes per `PATCH`; blobs up to this size go in a single `PUT`.
const CHUNK: u64 = 8 << 20;

/// Each upload request may take at least this long, whatever `timeout`
/// says: `timeout` bounds a whole request, body included, and reads use
/// small ranges while a `PATCH` carries up to [`CHUNK`] bytes.
const MIN_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Pushes blobs to `<scheme>://<host>/v2/<repo>/`.
#[derive(Debug)]
pub struct RegistryUploader {
    reg: Registry,
    /// `.../v2/<repo>/blobs/uploads/`.
    uploads: Url,
    chunk: u64,
}

impl RegistryUploader {
    /// Check `cfg` and build the client. No request is sent yet.
    pub fn new(mut cfg: RegistryConfig) -> Result<Self> {
        cfg.http.timeout = cfg.http.timeout.max(MIN_UPLOAD_TIMEOUT);
        let reg = Registry::new(cfg, true)?;
        let uploads = reg
            .base
            .join("uploads/")
            .map_err(|e| StorageError::BackendConfig(format!("registry: cannot form the upload URL: {e}")))?;
        Ok(Self { reg, uploads, chunk: CHUNK })
    }

    fn blob_url(&self, blob_id: &str) -> Result<Url> {
        check_blob_id(blob_id)?;
        if !is_sha256_hex(blob_id) {
            return Err(StorageError::BackendConfig(format!(
                "registry: blob id {blob_id:?} is not a sha256 digest in hex; registries store blobs under their \
                 SHA-256 (do not pass --blob-id)"
            )));
        }
        self.reg
            .base
            .join(&format!("./sha256:{blob_id}"))
            .map_err(|e| StorageError::BackendConfig(format!("registry: blob {blob_id}: bad URL: {e}")))
    }

    fn fatal(blob_id: &str, url: &Url, cause: impl Into<String>) -> Failure {
        Failure::Fatal(StorageError::Remote { blob_id: blob_id.to_string(), url: redact(url), cause: cause.into() })
    }

    /// Send the request `build` makes for `url`, with the registry's
    /// credential when `url` is on the registry's origin; after a 401 the
    /// credential is renewed and the request sent once more.
    fn send(&self, blob_id: &str, url: &Url, build: &dyn Fn(Url) -> RequestBuilder) -> Attempt<Response> {
        let shown = redact(url);
        let same_origin = url.origin() == self.reg.base.origin();
        let mut reauthenticated = false;
        loop {
            let cred = self.reg.auth.credential(&self.reg.http, blob_id)?;
            let mut req = build(url.clone());
            if same_origin {
                if let Some(h) = &cred.header {
                    req = req.header(AUTHORIZATION, h.expose());
                }
            }
            let resp = req.send().map_err(transport_failure)?;
            if resp.status() != StatusCode::UNAUTHORIZED || !same_origin {
                return Ok(resp);
            }
            let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_string);
            self.reg.auth.unauthorized(&self.reg.http, blob_id, &shown, challenge.as_deref(), &cred)?;
            if reauthenticated {
                return Err(Failure::Fatal(StorageError::Auth {
                    blob_id: blob_id.to_string(),
                    url: shown,
                    cause: "the registry still answers 401 with fresh credentials; check that they may push to this \
                            repository"
                        .into(),
                }));
            }
            reauthenticated = true;
        }
    }

    /// `Location` of `resp`, resolved against the URL that was asked.
    fn location(blob_id: &str, resp: &Response, asked: &Url) -> Attempt<Url> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Self::fatal(blob_id, asked, format!("{} without a Location header", resp.status())))?;
        asked.join(loc).map_err(|e| Self::fatal(blob_id, asked, format!("bad Location {loc:?}: {e}")))
    }

    /// The failure an unexpected status of an upload request stands for.
    fn upload_failure(blob_id: &str, url: &Url, resp: &Response, step: &str) -> Failure {
        let status = resp.status();
        let shown = redact(url);
        if status == StatusCode::FORBIDDEN {
            return Failure::Fatal(StorageError::Auth {
                blob_id: blob_id.to_string(),
                url: shown,
                cause: format!("{step}: 403 Forbidden; the credentials may not push to this repository"),
            });
        }
        if status == StatusCode::NOT_FOUND && step != "opening an upload session" {
            // The session expired or the registry restarted: start over.
            return Failure::transient(format!("{step}: the upload session is gone (404)"));
        }
        status_failure(status, resp.headers(), blob_id, &shown, &format!("{step} failed; see the registry's logs"))
    }

    /// One whole push: a new session, the data, the commit.
    fn push(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Attempt<()> {
        let http = self.reg.http.client();
        let resp = self.send(blob_id, &self.uploads, &|u| http.post(u).header(CONTENT_LENGTH, 0))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::upload_failure(blob_id, &self.uploads, &resp, "opening an upload session"));
        }
        let mut session = Self::location(blob_id, &resp, &self.uploads)?;
        let shown = redact(&session);
        let read_err = |e: StorageError| Failure::Fatal(e);
        let mut digest = DigestCheck::default();
        let mut buf = Vec::new();
        progress(0);
        let last_body = if size <= self.chunk {
            read_piece(file, &shown, 0, size as usize, &mut buf).map_err(read_err)?;
            digest.update(&buf);
            std::mem::take(&mut buf)
        } else {
            let mut done = 0u64;
            while done < size {
                let n = (size - done).min(self.chunk);
                read_piece(file, &shown, done, n as usize, &mut buf).map_err(read_err)?;
                digest.update(&buf);
                let range = format!("{}-{}", done, done + n - 1);
                let body = &buf;
                let resp = self.send(blob_id, &session, &|u| {
                    http.patch(u)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, &range)
                        .header(CONTENT_LENGTH, n)
                        .body(body.clone())
                })?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Self::upload_failure(blob_id, &session, &resp, "sending a chunk (PATCH)"));
                }
                session = Self::location(blob_id, &resp, &session)?;
                done += n;
                progress(done);
            }
            Vec::new()
        };
        let actual = digest.finish();
        if actual != blob_id {
            let _ = self.send(blob_id, &session, &|u| http.delete(u));
            return Err(Self::fatal(
                blob_id,
                &session,
                format!("the data's SHA-256 is {actual}, not the blob id: refusing to store it under the wrong digest"),
            ));
        }
        let mut commit = session.clone();
        commit.query_pairs_mut().append_pair("digest", &format!("sha256:{blob_id}"));
        let len = last_body.len();
        let resp = self.send(blob_id, &commit, &|u| {
            http.put(u)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, len)
                .body(last_body.clone())
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::upload_failure(blob_id, &session, &resp, "committing the upload (PUT ?digest=)"));
        }
        progress(size);
        Ok(())
    }
}

impl BlobUploader for RegistryUploader {
    fn blob_exists(&self, blob_id: &str) -> Result<bool> {
        let url = self.blob_url(blob_id)?;
        let shown = redact(&url);
        let http = self.reg.http.client();
        self.reg.http.retry(blob_id, &shown, || {
            let resp = self.send(blob_id, &url, &|u| http.head(u))?;
            let status = resp.status();
            match status {
                StatusCode::OK => Ok(true),
                // Registries backed by object storage redirect to the data.
                s if s.is_redirection() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(Self::upload_failure(blob_id, &url, &resp, "checking whether the blob exists (HEAD)")),
            }
        })
    }

    fn upload(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let url = self.blob_url(blob_id)?;
        if size == 0 {
            return Err(StorageError::BackendConfig(format!("registry: blob {blob_id} is empty: nothing to push")));
        }
        self.reg.http.retry(blob_id, &redact(&url), || self.push(blob_id, file, size, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpConfig;

    fn cfg() -> RegistryConfig {
        RegistryConfig {
            scheme: "http".into(),
            host: "127.0.0.1:1".into(),
            repo: "a/b".into(),
            auth: None,
            registry_token: None,
            blob_url_scheme: String::new(),
            blob_redirected_host: String::new(),
            mirrors: Vec::new(),
            http: HttpConfig::default(),
        }
    }

    #[test]
    fn urls_and_ids() {
        let up = RegistryUploader::new(cfg()).unwrap();
        assert_eq!(up.uploads.as_str(), "http://127.0.0.1:1/v2/a/b/blobs/uploads/");
        let id = "ab".repeat(32);
        assert_eq!(up.blob_url(&id).unwrap().as_str(), format!("http://127.0.0.1:1/v2/a/b/blobs/sha256:{id}"));
        let e = up.blob_url("custom-id").unwrap_err();
        assert!(e.to_string().contains("not a sha256 digest"), "{e}");
        // Session URLs may be relative or absolute.
        let rel = up.uploads.join("/v2/a/b/blobs/uploads/u1?_state=x").unwrap();
        assert_eq!(rel.as_str(), "http://127.0.0.1:1/v2/a/b/blobs/uploads/u1?_state=x");
        let abs = up.uploads.join("https://other:5000/up/u2").unwrap();
        assert_eq!(abs.as_str(), "https://other:5000/up/u2");
    }

    #[test]
    fn dead_registry_is_a_clear_error() {
        let mut c = cfg();
        c.http.connect_timeout = Duration::from_millis(500);
        let up = RegistryUploader::new(c).unwrap();
        let id = "cd".repeat(32);
        let e = up.blob_exists(&id).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&id) && msg.contains("cannot connect"), "{msg}");
    }
}
