//! Blobs served by an OCI distribution registry: `GET
//! /v2/<repo>/blobs/sha256:<blob id>` with `Range`.
//!
//! Authentication (anonymous, Basic, Bearer) lives in [`auth`]. Registries
//! that keep blobs in object storage answer with a 307/302 redirect to a
//! (usually presigned) URL; we follow it ourselves, without the registry's
//! `Authorization` header unless the target is the registry's own origin,
//! and remember it per blob so later reads go straight there. When that
//! URL stops working (expired: 401/403/404/410), it is dropped and the
//! registry is asked again.
//!
//! Reads may go through [`mirror`]s first (tried in order, set aside while
//! failing, the registry as the last resort); pushes live in [`upload`].

mod auth;
mod mirror;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::header::{AUTHORIZATION, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};

use super::http::{
    range_header, read_range, redact, status_failure, transport_failure, Attempt, Failure, HttpClient, RangeRead,
};
use super::{check_blob_id, BlobBackend, BlobReader};
pub use crate::config::MirrorConfig;
use crate::config::RegistryConfig;
use crate::error::{Result, StorageError};
use auth::{Auth, Credential};
use mirror::Mirrors;
pub use upload::RegistryUploader;

/// Redirects followed in a row before giving up (a redirect loop).
const MAX_REDIRECTS: usize = 5;

/// An OCI registry backend.
#[derive(Debug)]
pub struct RegistryBackend {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    /// `<scheme>://<host>/v2/<repo>/blobs/`.
    base: Url,
    cfg: RegistryConfig,
    http: HttpClient,
    auth: Auth,
    /// Blob id → where the registry redirected us last time.
    redirects: Mutex<HashMap<String, Url>>,
    /// Tried in order before the registry.
    mirrors: Mirrors,
}

impl RegistryBackend {
    /// Check `cfg` and build the client (reading through `cfg.mirrors`
    /// first, when there are any). No request is sent yet.
    pub fn new(cfg: RegistryConfig) -> Result<Self> {
        let mut reg = Registry::new(cfg, false)?;
        let (scheme, repo) = (&reg.cfg.scheme, reg.cfg.repo.trim_matches('/'));
        reg.mirrors = Mirrors::new(&reg.cfg.mirrors, scheme, repo, reg.cfg.http.timeout)?;
        Ok(Self { inner: Arc::new(reg) })
    }
}

impl Registry {
    /// Check `cfg` and build the client; `push` asks token servers for push
    /// rights too.
    fn new(cfg: RegistryConfig, push: bool) -> Result<Self> {
        let bad = |m: String| StorageError::BackendConfig(format!("registry: {m}"));
        if cfg.scheme != "http" && cfg.scheme != "https" {
            return Err(bad(format!("scheme {:?} must be \"http\" or \"https\"", cfg.scheme)));
        }
        if cfg.host.is_empty() || cfg.host.contains(['/', '@', '?', '#']) {
            return Err(bad(format!("host {:?} must be a host name with an optional :port", cfg.host)));
        }
        let repo = cfg.repo.trim_matches('/');
        if repo.is_empty() || repo.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(bad(format!("repo {:?} must be a repository name such as library/ubuntu", cfg.repo)));
        }
        if let Some(a) = &cfg.auth {
            auth::check_basic(a.expose()).map_err(|m| bad(format!("auth {m}")))?;
        }
        let base = Url::parse(&format!("{}://{}/v2/{}/blobs/", cfg.scheme, cfg.host, repo))
            .map_err(|e| bad(format!("cannot form a URL from scheme, host and repo: {e}")))?;
        let http = HttpClient::new(&cfg.http)?;
        let mut auth = Auth::new(cfg.auth.clone(), cfg.registry_token.clone(), repo);
        if push {
            auth = auth.with_default_scope(format!("repository:{repo}:push,pull"));
        }
        Ok(Registry { base, cfg, http, auth, redirects: Mutex::new(HashMap::new()), mirrors: Mirrors::default() })
    }
}

impl BlobBackend for RegistryBackend {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        check_blob_id(blob_id)?;
        let digest = if blob_id.contains(':') { blob_id.to_string() } else { format!("sha256:{blob_id}") };
        // "./": a digest's "sha256:" would otherwise parse as a URL scheme.
        let url = self
            .inner
            .base
            .join(&format!("./{digest}"))
            .map_err(|e| StorageError::BackendConfig(format!("registry: blob {blob_id}: bad URL: {e}")))?;
        Ok(Arc::new(RegistryBlob {
            reg: self.inner.clone(),
            blob_id: blob_id.to_string(),
            shown: redact(&url),
            url,
            size: OnceLock::new(),
        }))
    }
}

/// One blob of the registry.
#[derive(Debug)]
struct RegistryBlob {
    reg: Arc<Registry>,
    blob_id: String,
    url: Url,
    /// `url` for messages.
    shown: String,
    size: OnceLock<u64>,
}

impl BlobReader for RegistryBlob {
    fn blob_size(&self) -> Result<u64> {
        self.reg.http.ranged_size(&self.size, &self.blob_id, &self.shown, "the registry", |b, o| self.fetch(b, o))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.reg.http.ranged_read(&self.size, &self.blob_id, &self.shown, buf, offset, |b, o| self.fetch(b, o))
    }
}

impl RegistryBlob {
    fn fatal(&self, url: &str, cause: impl Into<String>) -> Failure {
        Failure::Fatal(StorageError::Remote {
            blob_id: self.blob_id.clone(),
            url: url.to_string(),
            cause: cause.into(),
        })
    }

    /// One attempt at reading `buf.len()` bytes at `offset`.
    fn fetch(&self, buf: &mut [u8], offset: u64) -> Attempt<RangeRead> {
        let range = range_header(offset, buf.len() as u64);
        if let Some(r) = self.read_from_mirrors(&range, buf, offset) {
            return Ok(r);
        }
        if let Some(target) = self.reg.cached_redirect(&self.blob_id) {
            match self.get_redirected(&target, &range, None, buf, offset) {
                Err(Failure::Fatal(_)) => self.reg.forget_redirect(&self.blob_id),
                other => return other,
            }
        }
        let mut reauthenticated = false;
        loop {
            let cred = self.reg.auth.credential(&self.reg.http, &self.blob_id)?;
            let mut req = self.reg.http.client().get(self.url.clone()).header(RANGE, &range);
            if let Some(h) = &cred.header {
                req = req.header(AUTHORIZATION, h.expose());
            }
            let resp = self.reg.http.send(req).map_err(transport_failure)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_string);
                // Says why when it can (e.g. Basic credentials rejected).
                self.reg.auth.unauthorized(&self.reg.http, &self.blob_id, &self.shown, challenge.as_deref(), &cred)?;
                if reauthenticated {
                    return Err(Failure::Fatal(StorageError::Auth {
                        blob_id: self.blob_id.clone(),
                        url: self.shown.clone(),
                        cause: "the registry still answers 401 with a fresh token; check that the credentials may pull this repository".into(),
                    }));
                }
                reauthenticated = true;
                continue;
            }
            if status.is_redirection() {
                let target = self.location(&resp, &self.url)?;
                let target = self.reg.rewrite(target);
                self.reg.remember_redirect(&self.blob_id, target.clone());
                return self.get_redirected(&target, &range, Some(&cred), buf, offset);
            }
            if status == StatusCode::NOT_FOUND {
                return Err(Failure::Fatal(StorageError::BlobNotFound {
                    blob_id: self.blob_id.clone(),
                    tried: self.shown.clone(),
                }));
            }
            if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(status_failure(
                    status,
                    resp.headers(),
                    &self.blob_id,
                    &self.shown,
                    "check `host`, `repo` and the registry's logs",
                ));
            }
            return read_range(resp, offset, buf, &self.blob_id, &self.shown);
        }
    }

    /// `Location` of a redirect response, resolved against `base`.
    fn location(&self, resp: &reqwest::blocking::Response, base: &Url) -> Attempt<Url> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.fatal(&redact(base), format!("{} without a Location header", resp.status())))?;
        base.join(loc).map_err(|e| self.fatal(&redact(base), format!("bad redirect Location: {e}")))
    }

    /// GET a redirect target (following further redirects). The registry's
    /// credential goes along only to the registry's own origin.
    fn get_redirected(
        &self,
        target: &Url,
        range: &str,
        cred: Option<&Credential>,
        buf: &mut [u8],
        offset: u64,
    ) -> Attempt<RangeRead> {
        let mut url = target.clone();
        for _ in 0..MAX_REDIRECTS {
            let shown = redact(&url);
            let mut req = self.reg.http.client().get(url.clone()).header(RANGE, range);
            if url.origin() == self.url.origin() {
                if let Some(h) = cred.and_then(|c| c.header.as_ref()) {
                    req = req.header(AUTHORIZATION, h.expose());
                }
            }
            let resp = self.reg.http.send(req).map_err(|e| match transport_failure(e) {
                Failure::Transient { cause, retry_after } => {
                    Failure::Transient { cause: format!("redirected to {shown}: {cause}"), retry_after }
                }
                f => f,
            })?;
            let status = resp.status();
            if status.is_redirection() {
                url = self.location(&resp, &url)?;
                continue;
            }
            if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(status_failure(
                    status,
                    resp.headers(),
                    &self.blob_id,
                    &shown,
                    "the registry redirected here; the link may have expired",
                ));
            }
            return read_range(resp, offset, buf, &self.blob_id, &shown);
        }
        Err(self.fatal(&self.shown, format!("more than {MAX_REDIRECTS} redirects")))
    }
}

impl Registry {
    fn cached_redirect(&self, blob_id: &str) -> Option<Url> {
        self.redirects.lock().unwrap_or_else(|p| p.into_inner()).get(blob_id).cloned()
    }

    fn remember_redirect(&self, blob_id: &str, url: Url) {
        self.redirects.lock().unwrap_or_else(|p| p.into_inner()).insert(blob_id.to_string(), url);
    }

    fn forget_redirect(&self, blob_id: &str) {
        self.redirects.lock().unwrap_or_else(|p| p.into_inner()).remove(blob_id);
    }

    /// Apply `blob_url_scheme` and `blob_redirected_host` to a redirect target.
    fn rewrite(&self, mut url: Url) -> Url {
        if !self.cfg.blob_url_scheme.is_empty() {
            let _ = url.set_scheme(&self.cfg.blob_url_scheme);
        }
        if !self.cfg.blob_redirected_host.is_empty() {
            let (host, port) = match self.cfg.blob_redirected_host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
                _ => (self.cfg.blob_redirected_host.as_str(), None),
            };
            if url.set_host(Some(host)).is_ok() && port.is_some() {
                let _ = url.set_port(port);
            }
        }
        url
    }
}

#[cfg(test)]
mod tests;
