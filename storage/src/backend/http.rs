//! The HTTP layer every remote backend shares: one blocking client with
//! timeouts and TLS settings, retry with exponential backoff and jitter,
//! and positional ranged reads (`Range: bytes=a-b`).
//!
//! Backends describe one *attempt* of a request as a closure returning
//! [`Attempt`]; [`HttpClient::retry`] runs it until it succeeds, fails for
//! good, or runs out of retries. Redirects are never followed by the client:
//! backends follow them themselves, so that credentials meant for one host
//! are never sent to another.

#[path = "forward_proxy.rs"]
mod forward_proxy;

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::blocking::{Client, Request, RequestBuilder, Response};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::config::HttpConfig;
use crate::error::{Result, StorageError};

/// Why one attempt of a request failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth trying again: connection errors, timeouts, cut bodies, 5xx, 429.
    Transient {
        /// What happened (no credentials).
        cause: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Trying again will not help.
    Fatal(StorageError),
}

impl Failure {
    pub(crate) fn transient(cause: impl Into<String>) -> Self {
        Self::Transient { cause: cause.into(), retry_after: None }
    }
}

/// The result of one attempt.
pub(crate) type Attempt<T> = std::result::Result<T, Failure>;

/// Exponential backoff with "equal jitter": the n-th retry waits a random
/// time in `[d/2, d]` with `d = min(base * 2^n, max)`, so that many readers
/// failing together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// Delay before retry number `retry` (0 for the first retry); `random`
    /// is any random number. A server's `Retry-After` raises the delay, but
    /// never past `max`.
    pub(crate) fn delay(&self, retry: u32, random: u64, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        let d = self.base.saturating_mul(factor).min(self.max);
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        let jitter = if span == 0 { 0 } else { random % (span + 1) };
        let d = half + Duration::from_nanos(jitter);
        match retry_after {
            Some(ra) => d.max(ra).min(self.max),
            None => d,
        }
    }
}

/// A cheap random number for jitter (no crypto needed): the std hasher's
/// per-process random keys over a counter.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A blocking HTTP client with the settings of one backend.
#[derive(Debug)]
pub(crate) struct HttpClient {
    client: Client,
    /// Requests go through this proxy (see [`forward_proxy`]).
    proxy: Option<Arc<forward_proxy::ForwardProxy>>,
    retry_limit: u32,
    backoff: Backoff,
}

impl HttpClient {
    /// Build the client; fails on unreadable or invalid `ca_cert_files`
    /// and on a bad `proxy`. Starts the proxy's health checker.
    pub(crate) fn new(cfg: &HttpConfig) -> Result<Self> {
        let client = builder(cfg)?
            .build()
            .map_err(|e| StorageError::BackendConfig(format!("cannot build the HTTP client: {e}")))?;
        let proxy = match &cfg.proxy {
            Some(p) => Some(forward_proxy::ForwardProxy::new(p, builder(cfg)?, cfg.connect_timeout)?),
            None => None,
        };
        Ok(Self {
            client,
            proxy,
            retry_limit: cfg.retry_limit,
            backoff: Backoff { base: cfg.retry_base_delay, max: cfg.retry_max_delay },
        })
    }

    /// The underlying client, to build requests; send them with
    /// [`HttpClient::send`] or [`HttpClient::execute`] so that the proxy
    /// applies.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Send a request built from [`HttpClient::client`], through the proxy
    /// when one is configured.
    pub(crate) fn send(&self, req: RequestBuilder) -> reqwest::Result<Response> {
        self.execute(req.build()?)
    }

    /// Like [`HttpClient::send`], for a built request.
    pub(crate) fn execute(&self, req: Request) -> reqwest::Result<Response> {
        match &self.proxy {
            Some(p) => p.execute(&self.client, req),
            None => self.client.execute(req),
        }
    }

    /// `BlobReader::blob_size` of a blob read with ranged GETs: the size in
    /// `size`, else learnt from a one-byte read through `fetch` and kept;
    /// `server` names the server in the error ("the registry").
    pub(crate) fn ranged_size(
        &self,
        size: &OnceLock<u64>,
        blob_id: &str,
        url: &str,
        server: &str,
        mut fetch: impl FnMut(&mut [u8], u64) -> Attempt<RangeRead>,
    ) -> Result<u64> {
        if let Some(s) = size.get() {
            return Ok(*s);
        }
        let mut one = [0u8; 1];
        match self.retry(blob_id, url, || fetch(&mut one, 0))?.total {
            Some(t) => Ok(*size.get_or_init(|| t)),
            None => Err(StorageError::Remote {
                blob_id: blob_id.to_string(),
                url: url.to_string(),
                cause: format!("{server} did not tell the blob's size (no Content-Range total or Content-Length)"),
            }),
        }
    }

    /// `BlobReader::read_at` over ranged GETs (`fetch`), keeping in `size`
    /// the blob size an answer tells; reads at or past a known end are empty.
    pub(crate) fn ranged_read(
        &self,
        size: &OnceLock<u64>,
        blob_id: &str,
        url: &str,
        buf: &mut [u8],
        offset: u64,
        mut fetch: impl FnMut(&mut [u8], u64) -> Attempt<RangeRead>,
    ) -> Result<usize> {
        if buf.is_empty() || size.get().is_some_and(|&s| offset >= s) {
            return Ok(0);
        }
        let r = self.retry(blob_id, url, || fetch(buf, offset))?;
        if let Some(t) = r.total {
            let _ = size.set(t);
        }
        Ok(r.len)
    }

    /// Run `attempt` until it succeeds or fails for good; transient failures
    /// are retried `retry_limit` times with backoff. The final error names
    /// `blob_id` and `url` (which must carry no secrets).
    pub(crate) fn retry<T>(&self, blob_id: &str, url: &str, mut attempt: impl FnMut() -> Attempt<T>) -> Result<T> {
        let mut retry = 0;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient { cause, retry_after }) => {
                    if retry >= self.retry_limit {
                        let tries = retry + 1;
                        let plural = if tries == 1 { "" } else { "s" };
                        return Err(StorageError::Remote {
                            blob_id: blob_id.to_string(),
                            url: url.to_string(),
                            cause: format!("{cause} ({tries} attempt{plural}; raise retry_limit or timeout if the service is slow)"),
                        });
                    }
                    let d = self.backoff.delay(retry, random_u64(), retry_after);
                    tracing::warn!(blob_id, url, %cause, "retrying in {d:?}");
                    std::thread::sleep(d);
                    retry += 1;
                }
            }
        }
    }
}

/// A client builder with `cfg`'s timeouts and TLS settings.
fn builder(cfg: &HttpConfig) -> Result<reqwest::blocking::ClientBuilder> {
    let mut b = Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Environment proxies would silently reroute blob traffic (and
        // break loopback setups); a proxy must be configured explicitly.
        .no_proxy()
        .danger_accept_invalid_certs(cfg.skip_verify);
    for path in &cfg.ca_cert_files {
        let pem = std::fs::read(path).map_err(|e| StorageError::io("reading CA certificate file", path, e))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            StorageError::BackendConfig(format!("ca_cert_files: {} is not a PEM certificate: {e}", path.display()))
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// `url` without user info, query or fragment: safe for messages (presigned
/// blob URLs carry their signature in the query).
pub(crate) fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Describe a transport error without its URL (the caller names a redacted
/// one), keeping the root cause ("Connection refused", "timed out").
pub(crate) fn transport_failure(e: reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "response body cut short"
    } else {
        "request failed"
    };
    let mut cause = kind.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last {
        cause.push_str(": ");
        cause.push_str(&l);
    }
    if cause.contains("certificate") {
        cause.push_str("; trust the server's CA with `ca_cert_files` (or, for tests only, set `skip_verify`)");
    }
    Failure::transient(cause)
}

/// The `Range` header value for `len > 0` bytes at `offset`.
pub(crate) fn range_header(offset: u64, len: u64) -> String {
    let last = offset.saturating_add(len.max(1) - 1);
    format!("bytes={offset}-{last}")
}

/// A `Content-Range`: the inclusive byte range sent (`None` for `*`) and
/// the total size (`None` for `*`).
pub(crate) type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// A parsed `Content-Range: bytes a-b/total` (`total` may be `*`), or
/// `bytes */total` (from a 416), as `(Some((a, b)), total)`.
pub(crate) fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            Some((a, b))
        }
    };
    Some((range, total))
}

/// The failure a non-success status stands for. 5xx, 408 and 429 are
/// transient; anything else is fatal with `hint`.
pub(crate) fn status_failure(status: StatusCode, headers: &HeaderMap, blob_id: &str, url: &str, hint: &str) -> Failure {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Failure::Transient { cause: format!("server answered {status}"), retry_after };
    }
    Failure::Fatal(StorageError::Remote {
        blob_id: blob_id.to_string(),
        url: url.to_string(),
        cause: format!("server answered {status}; {hint}"),
    })
}

/// What a ranged GET returned: the bytes copied into the buffer, and the
/// blob's total size when the response told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeRead {
    pub(crate) len: usize,
    pub(crate) total: Option<u64>,
}

/// Copy the answer to `GET` with `Range: bytes=offset-(offset+buf.len()-1)`
/// into `buf`. A 206 must start at `offset`; a 200 carries the whole blob,
/// of which the asked slice is taken; a 416 means `offset` is at or past the
/// end (0 bytes). Any other status is the caller's business.
pub(crate) fn read_range(resp: Response, offset: u64, buf: &mut [u8], blob_id: &str, url: &str) -> Attempt<RangeRead> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = |name| headers.get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok());
    let bad = |cause: String| {
        Failure::Fatal(StorageError::Remote { blob_id: blob_id.to_string(), url: url.to_string(), cause })
    };
    let reply = RangeReply {
        status,
        content_range: text(CONTENT_RANGE).and_then(parse_content_range),
        content_length: text(CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok()),
        body: resp,
    };
    let cut = |e: io::Error| Failure::transient(format!("response body cut short: {e}"));
    reply
        .read_into(offset, buf, &bad, &cut)
        .unwrap_or_else(|| Err(bad(format!("unexpected status {status} for a ranged read"))))
}

/// The parts of an answer to a ranged `GET` that say which bytes it holds,
/// whatever carried it (reqwest, or the Unix-socket client).
pub(crate) struct RangeReply<R> {
    pub(crate) status: StatusCode,
    pub(crate) content_range: Option<ContentRange>,
    pub(crate) content_length: Option<u64>,
    pub(crate) body: R,
}

impl<R: Read> RangeReply<R> {
    /// Copy the asked slice into `buf` (see [`read_range`]); `None` for a
    /// status other than 206, 200 and 416. `bad` makes a fatal failure of a
    /// reason, `io_err` a failure of a body read error.
    pub(crate) fn read_into(
        self,
        offset: u64,
        buf: &mut [u8],
        bad: &dyn Fn(String) -> Failure,
        io_err: &dyn Fn(io::Error) -> Failure,
    ) -> Option<Attempt<RangeRead>> {
        Some(match self.status {
            StatusCode::PARTIAL_CONTENT => self.partial(offset, buf, bad, io_err),
            StatusCode::OK => self.whole(offset, buf, io_err),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                Ok(RangeRead { len: 0, total: self.content_range.and_then(|(_, t)| t) })
            }
            _ => return None,
        })
    }

    /// A 206: its range must start at `offset`.
    fn partial(
        mut self,
        offset: u64,
        buf: &mut [u8],
        bad: &dyn Fn(String) -> Failure,
        io_err: &dyn Fn(io::Error) -> Failure,
    ) -> Attempt<RangeRead> {
        let Some((Some((start, end)), total)) = self.content_range else {
            return Err(bad("206 response without a valid Content-Range".into()));
        };
        if start != offset {
            return Err(bad(format!("asked for bytes from {offset}, the server sent {start}-{end}")));
        }
        let n = usize::try_from(end - start + 1).unwrap_or(usize::MAX).min(buf.len());
        let got = read_up_to(&mut self.body, &mut buf[..n], io_err)?;
        if got < n {
            return Err(Failure::transient(format!("response body cut short: got {got} of {n} bytes")));
        }
        Ok(RangeRead { len: n, total })
    }

    /// A 200: the server ignored Range; skip to `offset`, then take the slice.
    fn whole(mut self, offset: u64, buf: &mut [u8], io_err: &dyn Fn(io::Error) -> Failure) -> Attempt<RangeRead> {
        let skipped = io::copy(&mut (&mut self.body).take(offset), &mut io::sink()).map_err(io_err)?;
        if skipped < offset {
            return Ok(RangeRead { len: 0, total: self.content_length });
        }
        let n = read_up_to(&mut self.body, buf, io_err)?;
        if let Some(total) = self.content_length {
            let want = total.saturating_sub(offset).min(buf.len() as u64);
            if (n as u64) < want {
                return Err(Failure::transient(format!("response body cut short: got {n} of {want} bytes")));
            }
        }
        Ok(RangeRead { len: n, total: self.content_length })
    }
}

/// Read into `buf` until it is full or the body ends; returns the bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8], io_err: &dyn Fn(io::Error) -> Failure) -> Attempt<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_math() {
        assert_eq!(range_header(0, 1), "bytes=0-0");
        assert_eq!(range_header(100, 50), "bytes=100-149");
        assert_eq!(range_header(u64::MAX - 1, 10), format!("bytes={}-{}", u64::MAX - 1, u64::MAX));
        assert_eq!(parse_content_range("bytes 0-0/5243003"), Some((Some((0, 0)), Some(5243003))));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((Some((100, 199)), None)));
        assert_eq!(parse_content_range("bytes */42"), Some((None, Some(42))));
        for bad in ["", "bytes", "bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes a-b/c", "bytes 1-2"] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2) };
        for retry in 0..10 {
            let d = (100u64 << retry).min(2000);
            let lo = b.delay(retry, 0, None);
            let hi = b.delay(retry, u64::MAX, None);
            assert!(lo >= Duration::from_millis(d / 2) && hi <= Duration::from_millis(d), "{retry}: {lo:?} {hi:?}");
            for _ in 0..20 {
                let x = b.delay(retry, random_u64(), None);
                assert!(x >= lo && x <= Duration::from_millis(d));
            }
        }
        // Retry-After raises the delay, but not past the cap.
        assert_eq!(b.delay(0, 0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0, Some(Duration::from_secs(60))), Duration::from_secs(2));
        assert!(b.delay(u32::MAX, 7, None) <= Duration::from_secs(2));
    }

    #[test]
    fn redact_drops_secrets() {
        let u = Url::parse("https://user:pw@s3.example/b/k?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact(&u), "https://s3.example/b/k");
    }

    #[test]
    fn retry_stops_on_fatal_and_after_limit() {
        let cfg = HttpConfig {
            retry_limit: 2,
            retry_base_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(2),
            ..Default::default()
        };
        let c = HttpClient::new(&cfg).unwrap();
        let mut n = 0;
        let e = c
            .retry::<()>("b1", "http://h/x", || {
                n += 1;
                Err(Failure::transient("boom"))
            })
            .unwrap_err();
        assert_eq!(n, 3);
        let msg = e.to_string();
        assert!(msg.contains("blob b1: http://h/x: boom (3 attempts"), "{msg}");
        let mut n = 0;
        let e = c
            .retry::<()>("b1", "u", || {
                n += 1;
                Err(Failure::Fatal(StorageError::Unsupported("no".into())))
            })
            .unwrap_err();
        assert_eq!((n, e.to_string()), (1, "no".to_string()));
        let mut n = 0;
        let v = c
            .retry("b1", "u", || {
                n += 1;
                if n < 3 {
                    Err(Failure::transient("x"))
                } else {
                    Ok(n)
                }
            })
            .unwrap();
        assert_eq!(v, 3);
    }
}
