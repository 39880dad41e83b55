//! A small blocking HTTP/1.1 client over a Unix stream socket: one
//! `GET` with `Range` per connection (`Connection: close`), the response
//! head parsed by `httparse`, and the whole exchange bounded by the
//! backend's `timeout`. Statuses mean what they mean over TCP (see
//! [`super::super::http::read_range`]).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;

use crate::backend::http::{parse_content_range, status_failure, Attempt, Failure, RangeRead, RangeReply};
use crate::config::HttpConfig;
use crate::error::StorageError;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Most headers accepted in a response.
const MAX_HEADERS: usize = 64;

/// One ranged `GET` over a Unix socket.
pub(super) struct UnixGet<'a> {
    pub(super) sock: &'a Path,
    /// Request target, e.g. `/blobs/<id>`.
    pub(super) target: &'a str,
    /// `Range` header value.
    pub(super) range: &'a str,
    pub(super) cfg: &'a HttpConfig,
    pub(super) blob_id: &'a str,
    /// Where the blob is, for messages.
    pub(super) shown: &'a str,
}

/// The socket with a deadline applied to every read and write.
struct Conn {
    stream: UnixStream,
    deadline: Instant,
}

impl Conn {
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.set_write_timeout(Some(left))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.stream.read(buf)
    }
}

/// A response body: what came with the head, then the socket.
struct Body {
    pre: Vec<u8>,
    pos: usize,
    conn: Conn,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pre.len() {
            let n = buf.len().min(self.pre.len() - self.pos);
            buf[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.conn.read(buf)
    }
}

fn io_failure(what: &str, e: io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out",
        _ => "request failed",
    };
    Failure::transient(format!("{kind} ({what}): {e}"))
}

impl UnixGet<'_> {
    fn fatal(&self, cause: impl Into<String>) -> Failure {
        Failure::Fatal(StorageError::Remote {
            blob_id: self.blob_id.into(),
            url: self.shown.into(),
            cause: cause.into(),
        })
    }

    /// Sends the request and reads the response head.
    fn exchange(&self) -> Attempt<(StatusCode, HeaderMap, Body)> {
        let stream = UnixStream::connect(self.sock).map_err(|e| Failure::transient(format!("cannot connect: {e}")))?;
        let mut conn = Conn { stream, deadline: Instant::now() + self.cfg.timeout.max(Duration::from_millis(1)) };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nRange: {}\r\nConnection: close\r\n\r\n",
            self.target, self.range
        );
        conn.arm().and_then(|_| conn.stream.write_all(req.as_bytes())).map_err(|e| io_failure("sending", e))?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = conn.read(&mut chunk).map_err(|e| io_failure("reading the response", e))?;
            if n == 0 {
                return Err(Failure::transient("the server closed the connection before a complete response head"));
            }
            head.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&head) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok());
                    let status = status.ok_or_else(|| self.fatal("response with an invalid status code"))?;
                    let mut map = HeaderMap::new();
                    for h in resp.headers.iter() {
                        if let (Ok(k), Ok(v)) =
                            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
                        {
                            map.append(k, v);
                        }
                    }
                    let pre = head[len..].to_vec();
                    return Ok((status, map, Body { pre, pos: 0, conn }));
                }
                Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
                Ok(httparse::Status::Partial) => return Err(self.fatal("response head larger than 64 KiB")),
                Err(e) => return Err(self.fatal(format!("malformed HTTP response: {e}"))),
            }
        }
    }

    /// One attempt at reading `buf.len()` bytes at `offset`.
    pub(super) fn get_range(&self, buf: &mut [u8], offset: u64) -> Attempt<RangeRead> {
        let (status, headers, mut body) = self.exchange()?;
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        if text("transfer-encoding").is_some_and(|t| !t.eq_ignore_ascii_case("identity")) {
            return Err(self.fatal("chunked responses are not supported over a Unix socket; send Content-Length"));
        }
        let reply = RangeReply {
            status,
            content_range: text("content-range").and_then(parse_content_range),
            content_length: text("content-length").and_then(|v| v.parse::<u64>().ok()),
            body: &mut body,
        };
        let io_err = |e| io_failure("reading the body", e);
        if let Some(r) = reply.read_into(offset, buf, &|cause| self.fatal(cause), &io_err) {
            return r;
        }
        match status {
            StatusCode::NOT_FOUND => Err(Failure::Fatal(StorageError::BlobNotFound {
                blob_id: self.blob_id.into(),
                tried: self.shown.into(),
            })),
            other => Err(status_failure(
                other,
                &headers,
                self.blob_id,
                self.shown,
                "check `addr`, `path` and the server's logs",
            )),
        }
    }
}
