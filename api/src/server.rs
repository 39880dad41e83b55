//! HTTP/1.1 on a Unix socket (and TCP for `/metrics`).
//!
//! Limits keep a misbehaving client from hurting the daemon: bodies over [`MAX_BODY`] get
//! 413 (from `Content-Length` before anything is read, or while reading), request headers
//! must arrive within [`HEADER_TIMEOUT`] and the body within [`BODY_TIMEOUT`], headers are
//! capped at 64 KiB, and every connection is its own task, so one stuck client delays no
//! other. The handler runs on the blocking pool, so a slow mount delays only its caller.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::request;
use crate::types::{ApiResponse, Body};
use crate::ApiHandler;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1 << 20;
/// Time allowed for a request's headers to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a request's body to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Removes the socket file when dropped (the daemon exits).
#[derive(Debug)]
pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Create the API socket at `path` with mode 0600. A socket file nobody listens on (left by
/// a crashed daemon) is replaced; one a live process accepts on is an error.
pub fn bind_unix(path: &Path) -> Result<(UnixListener, SocketGuard), ApiError> {
    let shown = path.display().to_string();
    let bind_err = |source| ApiError::Bind { path: shown.clone(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(ApiError::SocketInUse(shown)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::warn!(socket = %shown, "replacing a stale API socket left by a previous daemon");
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        },
        Ok(_) => return Err(ApiError::NotASocket(shown)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let guard = SocketGuard(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok((listener, guard))
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (the Unix socket).
    All,
    /// Only `GET /metrics` (a TCP listener).
    MetricsOnly,
}

/// Serve the API on `listener` (from [`bind_unix`]) until `shutdown` turns true.
/// Must run inside a Tokio runtime.
pub async fn serve_unix(
    listener: UnixListener,
    handler: Arc<dyn ApiHandler>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let l = tokio::net::UnixListener::from_std(listener)?;
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, _)) => {
                    tokio::spawn(serve_connection(s, handler.clone(), Scope::All));
                }
                Err(e) => accept_failed(e).await,
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Serve only `GET /metrics` on a TCP listener until `shutdown` turns true.
pub async fn serve_tcp(
    listener: std::net::TcpListener,
    handler: Arc<dyn ApiHandler>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(listener)?;
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, _)) => {
                    tokio::spawn(serve_connection(s, handler.clone(), Scope::MetricsOnly));
                }
                Err(e) => accept_failed(e).await,
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn accept_failed(e: io::Error) {
    // Out of descriptors and the like: back off instead of spinning.
    tracing::warn!(error = %e, "API accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serve one connection (any byte stream).
pub async fn serve_connection<S>(io: S, handler: Arc<dyn ApiHandler>, scope: Scope)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| answer(req, handler.clone(), scope));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: Arc<dyn ApiHandler>,
    scope: Scope,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let resp = respond(req, handler, scope, &method, &path, query.as_deref()).await;
    tracing::debug!(method = %method, path = %path, status = resp.status, "API request");
    Ok(to_http(resp))
}

async fn respond(
    req: Request<Incoming>,
    handler: Arc<dyn ApiHandler>,
    scope: Scope,
    method: &str,
    path: &str,
    query: Option<&str>,
) -> ApiResponse {
    if scope == Scope::MetricsOnly && path != "/metrics" {
        return ApiResponse::error(404, format!("only /metrics is served here, not {path}"));
    }
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Err(_) => return ApiResponse::error(408, "the request body did not arrive in time"),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => return ApiResponse::error(400, format!("cannot read the request body: {e}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let req = match request::parse(method, path, query, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match tokio::task::spawn_blocking(move || handler.handle(req)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "API handler failed");
            ApiResponse::error(500, "the request handler failed; see the daemon log")
        }
    }
}

fn too_large() -> ApiResponse {
    ApiResponse::error(413, format!("request body larger than {MAX_BODY} bytes"))
}

fn to_http(r: ApiResponse) -> Response<Full<Bytes>> {
    let (ctype, bytes) = match r.body {
        Body::Empty => (None, Bytes::new()),
        Body::Json(v) => (Some("application/json"), Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
        Body::Text { content_type, text } => (Some(content_type), Bytes::from(text)),
    };
    let mut b = Response::builder().status(r.status);
    if let Some(c) = ctype {
        b = b.header(hyper::header::CONTENT_TYPE, c);
    }
    b.body(Full::new(bytes)).unwrap_or_else(|_| {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

#[cfg(test)]
mod tests;
