//! Answering one request: route, open the blob, pick the range, stream it.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use crate::range::{select, Selection};
use crate::route::{route, Route, RouteError};

/// Bytes read from the blob file per body frame.
const FRAME: usize = 256 << 10;

/// A response body: nothing, a short text, or a byte range of a file read
/// as the client consumes it (never the whole blob in memory).
pub enum ProxyBody {
    /// No body (HEAD, errors without text).
    Empty,
    /// A small fixed body.
    Text(Option<Bytes>),
    /// `remaining` bytes of `file` from its current position.
    File {
        /// The open blob, positioned at the first byte to send.
        file: tokio::fs::File,
        /// Bytes still to send.
        remaining: u64,
        /// Read buffer, kept across `Pending` polls.
        buf: BytesMut,
    },
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::File { file, remaining, buf } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(FRAME as u64) as usize;
                buf.resize(want, 0);
                let mut rb = ReadBuf::new(&mut buf[..]);
                match Pin::new(file).poll_read(cx, &mut rb) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            // The file shrank under us: cut the response
                            // (the client sees a short body, never wrong bytes).
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "blob file ended early (truncated while being served?)",
                            ))));
                        }
                        *remaining -= n as u64;
                        let chunk = buf.split_to(n).freeze();
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Text(t) => t.is_none(),
            ProxyBody::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

fn text(status: StatusCode, msg: impl Into<String>, head: bool) -> Response<ProxyBody> {
    let mut msg = msg.into();
    msg.push('\n');
    let len = msg.len();
    let body = if head { ProxyBody::Empty } else { ProxyBody::Text(Some(Bytes::from(msg))) };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// The blob server's state: where blobs are.
#[derive(Debug, Clone)]
pub struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    /// Serve blobs from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Answer `req`. Never fails: every problem is a status code.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served", false);
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let resp = match route(req.uri().path()) {
            Ok(Route::ApiVersion) => {
                let mut r = text(StatusCode::OK, "{}", head);
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
                r
            }
            Ok(Route::Blob(id)) => self.blob(&id, range.as_deref(), head).await,
            Err(e @ RouteError::NotFound) => text(StatusCode::NOT_FOUND, e.to_string(), head),
            Err(e @ RouteError::BadDigest(_)) => text(StatusCode::BAD_REQUEST, e.to_string(), head),
        };
        tracing::info!(
            method = %req.method(),
            path = req.uri().path(),
            range = range.as_deref().unwrap_or("-"),
            status = resp.status().as_u16(),
            bytes = resp.body().size_hint().exact().unwrap_or(0),
            "request"
        );
        resp
    }

    async fn blob(&self, id: &str, range: Option<&str>, head: bool) -> Response<ProxyBody> {
        let path = self.dir.join(id);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return text(StatusCode::NOT_FOUND, format!("blob sha256:{id} not found"), head)
            }
            Err(e) => return self.internal(&path, "opening", e, head),
        };
        let meta = match file.metadata().await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return text(StatusCode::NOT_FOUND, format!("blob sha256:{id} not found"), head),
            Err(e) => return self.internal(&path, "inspecting", e, head),
        };
        let size = meta.len();
        let (status, start, len) = match select(range, size) {
            Selection::Whole => (StatusCode::OK, 0, size),
            Selection::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            Selection::Unsatisfiable => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, format!("the blob has {size} bytes"), head);
                r.headers_mut().insert(CONTENT_RANGE, hv(format!("bytes */{size}")));
                return r;
            }
        };
        let body = if head || len == 0 {
            ProxyBody::Empty
        } else {
            if start > 0 {
                if let Err(e) = file.seek(SeekFrom::Start(start)).await {
                    return self.internal(&path, "seeking in", e, head);
                }
            }
            ProxyBody::File { file, remaining: len, buf: BytesMut::new() }
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert("Docker-Content-Digest", hv(format!("sha256:{id}")));
        if status == StatusCode::PARTIAL_CONTENT {
            h.insert(CONTENT_RANGE, hv(format!("bytes {start}-{}/{size}", start + len - 1)));
        }
        r
    }

    fn internal(&self, path: &Path, op: &str, e: io::Error, head: bool) -> Response<ProxyBody> {
        tracing::error!(path = %path.display(), "{op} blob failed: {e}");
        text(StatusCode::INTERNAL_SERVER_ERROR, format!("{op} the blob failed"), head)
    }
}

fn hv(s: String) -> HeaderValue {
    // Only ever called with ASCII digits, "bytes", "sha256:" and hex.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
