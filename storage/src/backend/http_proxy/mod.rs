//! Blobs served by a plain HTTP server (upstream's `http-proxy` backend):
//! blob `ID` is `GET {addr}{path}/ID` with `Range`, over TCP (`http://`,
//! `https://`) or over a Unix stream socket (`addr` is its absolute path).
//!
//! TCP requests go through the shared HTTP layer. Unix sockets get a small
//! blocking HTTP/1.1 client of their own (module `unix`): one connection per
//! request, the same timeouts, and the same retry policy through
//! `HttpClient::retry`. Upstream requests `/` for every blob over a Unix
//! socket (one blob per socket); we send `{path}/ID` there too, so one
//! server can hold many blobs.

mod unix;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use reqwest::header::RANGE;
use reqwest::{StatusCode, Url};

use super::http::{
    range_header, read_range, redact, status_failure, transport_failure, Attempt, Failure, HttpClient, RangeRead,
};
use super::{check_blob_id, BlobBackend, BlobReader};
use crate::config::{HttpConfig, HttpProxyAddr, HttpProxyConfig};
use crate::error::{Result, StorageError};

/// Where requests go.
#[derive(Debug)]
enum Target {
    /// `{addr}{path}/`.
    Tcp(Url),
    /// The socket, and the path prefix.
    Unix(PathBuf, String),
}

/// The http-proxy backend.
#[derive(Debug)]
pub struct HttpProxyBackend {
    inner: Arc<Proxy>,
}

#[derive(Debug)]
struct Proxy {
    target: Target,
    http: HttpClient,
    cfg: HttpConfig,
}

impl HttpProxyBackend {
    /// Check `cfg` and build the client. No request is sent yet.
    pub fn new(cfg: &HttpProxyConfig) -> Result<Self> {
        let target = match &cfg.addr {
            HttpProxyAddr::Url(u) => Target::Tcp(Url::parse(&format!("{u}{}/", cfg.path)).map_err(|e| {
                StorageError::BackendConfig(format!("http-proxy: cannot form a URL from addr and path: {e}"))
            })?),
            HttpProxyAddr::UnixSocket(p) => Target::Unix(p.clone(), cfg.path.clone()),
        };
        let http = HttpClient::new(&cfg.http)?;
        Ok(Self { inner: Arc::new(Proxy { target, http, cfg: cfg.http.clone() }) })
    }
}

impl BlobBackend for HttpProxyBackend {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        check_blob_id(blob_id)?;
        let (url, shown) = match &self.inner.target {
            Target::Tcp(base) => {
                let url = base
                    .join(&format!("./{blob_id}"))
                    .map_err(|e| StorageError::BackendConfig(format!("http-proxy: blob {blob_id}: bad URL: {e}")))?;
                let shown = redact(&url);
                (Some(url), shown)
            }
            Target::Unix(sock, path) => (None, format!("unix:{}:{path}/{blob_id}", sock.display())),
        };
        Ok(Arc::new(ProxyBlob {
            proxy: self.inner.clone(),
            blob_id: blob_id.to_string(),
            url,
            shown,
            size: OnceLock::new(),
        }))
    }
}

/// One blob of the server.
#[derive(Debug)]
struct ProxyBlob {
    proxy: Arc<Proxy>,
    blob_id: String,
    /// The blob's URL over TCP; `None` over a Unix socket.
    url: Option<Url>,
    /// Where the blob is, for messages.
    shown: String,
    size: OnceLock<u64>,
}

impl ProxyBlob {
    /// One attempt at reading `buf.len()` bytes at `offset`.
    fn fetch(&self, buf: &mut [u8], offset: u64) -> Attempt<RangeRead> {
        let range = range_header(offset, buf.len() as u64);
        let Some(url) = &self.url else {
            let Target::Unix(sock, path) = &self.proxy.target else {
                unreachable!("a blob without URL is on a socket")
            };
            let target = format!("{path}/{}", self.blob_id);
            let get = unix::UnixGet {
                sock,
                target: &target,
                range: &range,
                cfg: &self.proxy.cfg,
                blob_id: &self.blob_id,
                shown: &self.shown,
            };
            return get.get_range(buf, offset);
        };
        let req = self.proxy.http.client().get(url.clone()).header(RANGE, &range);
        let resp = self.proxy.http.send(req).map_err(transport_failure)?;
        let status = resp.status();
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
                "check `addr`, `path` and the server's logs",
            ));
        }
        read_range(resp, offset, buf, &self.blob_id, &self.shown)
    }
}

impl BlobReader for ProxyBlob {
    fn blob_size(&self) -> Result<u64> {
        self.proxy.http.ranged_size(&self.size, &self.blob_id, &self.shown, "the server", |b, o| self.fetch(b, o))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.proxy.http.ranged_read(&self.size, &self.blob_id, &self.shown, buf, offset, |b, o| self.fetch(b, o))
    }
}

#[cfg(test)]
mod tests;
