//! Registry mirrors: other servers with the same blobs, tried in order
//! before the registry itself.
//!
//! A mirror that fails (cannot connect, times out, answers 5xx/401/403, cuts
//! a body) `failure_limit` times in a row is skipped until its health check
//! passes again: a background thread asks `GET <mirror>/v2/` every
//! `health_check_interval` and puts the mirror back when it answers anything
//! below 500. A mirror without the blob (404) is simply passed over; that
//! is an answer, not a failure. The registry (`host`) is always the last
//! resort, so a dead mirror costs at most a refused connection per read
//! until it is set aside, and never a failed read.
//!
//! Mirrors get their configured `headers` and never the registry's
//! `Authorization`: credentials stay with the host they were issued for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RANGE};
use reqwest::{StatusCode, Url};

use super::RegistryBlob;
use crate::backend::http::{read_range, redact, transport_failure, Failure, RangeRead};
use crate::config::MirrorConfig;
use crate::error::{Result, StorageError};

/// A mirror and its health.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// `<scheme>://<host>/v2/<repo>/blobs/`.
    pub(crate) base: Url,
    /// `<scheme>://<host>/v2/`.
    ping: Url,
    pub(crate) headers: HeaderMap,
    failure_limit: u32,
    interval: Duration,
    failures: AtomicU32,
}

impl Mirror {
    /// Whether reads should try this mirror now.
    pub(crate) fn usable(&self) -> bool {
        self.failures.load(Ordering::Relaxed) < self.failure_limit
    }

    /// The mirror answered: its failure streak is over.
    pub(crate) fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// The mirror failed once more; says whether that set it aside.
    pub(crate) fn failed(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1 == self.failure_limit
    }

    /// The host, for messages.
    pub(crate) fn shown(&self) -> String {
        self.ping.origin().ascii_serialization()
    }
}

/// The mirrors of one registry backend, in the order they are tried.
#[derive(Debug, Default)]
pub(crate) struct Mirrors {
    list: Arc<Vec<Mirror>>,
}

fn parse(cfg: &MirrorConfig, scheme: &str, repo: &str) -> Result<Mirror> {
    let bad = |m: String| StorageError::BackendConfig(format!("registry mirror {:?}: {m}", cfg.host));
    let host = cfg.host.trim_end_matches('/');
    let origin = if host.contains("://") { host.to_string() } else { format!("{scheme}://{host}") };
    let ping = Url::parse(&format!("{origin}/v2/")).map_err(|e| bad(format!("not a host or URL: {e}")))?;
    if !matches!(ping.scheme(), "http" | "https") || ping.host_str().is_none() || ping.path() != "/v2/" {
        return Err(bad("use http(s)://host[:port] or host[:port]".into()));
    }
    let base = ping.join(&format!("{repo}/blobs/")).map_err(|e| bad(format!("bad URL: {e}")))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(format!("bad header name {k:?}")))?;
        // The value may be a credential: never echoed.
        let value = HeaderValue::from_str(v).map_err(|_| bad(format!("the value of header {k:?} is not valid")))?;
        headers.insert(name, value);
    }
    if cfg.health_check_interval.is_zero() {
        return Err(bad("health_check_interval must be more than 0".into()));
    }
    Ok(Mirror {
        base,
        ping,
        headers,
        failure_limit: cfg.failure_limit.max(1),
        interval: cfg.health_check_interval,
        failures: AtomicU32::new(0),
    })
}

impl Mirrors {
    /// Check the mirror settings and start the health checker (when there
    /// are mirrors). `scheme` and `repo` are the registry's.
    pub(crate) fn new(cfgs: &[MirrorConfig], scheme: &str, repo: &str, timeout: Duration) -> Result<Self> {
        let list = cfgs.iter().map(|c| parse(c, scheme, repo)).collect::<Result<Vec<_>>>()?;
        let list = Arc::new(list);
        if !list.is_empty() {
            let client = Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .map_err(|e| StorageError::BackendConfig(format!("cannot build the mirror health client: {e}")))?;
            let weak = Arc::downgrade(&list);
            std::thread::Builder::new()
                .name("mirror-health".into())
                .spawn(move || health_loop(weak, client))
                .map_err(|e| StorageError::BackendConfig(format!("cannot start the mirror health checker: {e}")))?;
        }
        Ok(Self { list })
    }

    /// The mirrors reads should try now, in order.
    pub(crate) fn usable(&self) -> impl Iterator<Item = &Mirror> {
        self.list.iter().filter(|m| m.usable())
    }

    #[cfg(test)]
    pub(crate) fn all(&self) -> &[Mirror] {
        &self.list
    }
}

impl RegistryBlob {
    /// Try the usable mirrors in order; `None` when none of them served the
    /// range (then the registry is asked).
    pub(super) fn read_from_mirrors(&self, range: &str, buf: &mut [u8], offset: u64) -> Option<RangeRead> {
        for m in self.reg.mirrors.usable() {
            match self.fetch_mirror(m, range, buf, offset) {
                Ok(Some(r)) => {
                    m.succeeded();
                    return Some(r);
                }
                Ok(None) => {}
                Err(cause) => {
                    let mirror = m.shown();
                    if m.failed() {
                        tracing::warn!(blob_id = %self.blob_id, %mirror, %cause, "registry mirror failed too often; set aside until its health check passes");
                    } else {
                        tracing::warn!(blob_id = %self.blob_id, %mirror, %cause, "registry mirror failed; trying the next source");
                    }
                }
            }
        }
        None
    }

    /// One read from mirror `m`: `Ok(None)` when it does not have the blob,
    /// `Err(cause)` when it failed.
    fn fetch_mirror(
        &self,
        m: &Mirror,
        range: &str,
        buf: &mut [u8],
        offset: u64,
    ) -> std::result::Result<Option<RangeRead>, String> {
        let why = |f: Failure| match f {
            Failure::Transient { cause, .. } => cause,
            Failure::Fatal(e) => e.to_string(),
        };
        let digest = self.url.path().rsplit('/').next().unwrap_or_default();
        let url = m.base.join(&format!("./{digest}")).map_err(|e| format!("bad URL: {e}"))?;
        let req = self.reg.http.client().get(url.clone()).headers(m.headers.clone()).header(RANGE, range);
        let resp = self.reg.http.send(req).map_err(|e| why(transport_failure(e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_redirection() {
            let target = self.location(&resp, &url).map_err(why)?;
            // Never with the registry's credential: `None`.
            return self.get_redirected(&target, range, None, buf, offset).map(Some).map_err(why);
        }
        if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(format!("answered {status}"));
        }
        read_range(resp, offset, buf, &self.blob_id, &redact(&url)).map(Some).map_err(why)
    }
}

/// Every `interval` (the shortest of the mirrors'), ping the mirrors that
/// are set aside whose own interval has passed; ends with the backend.
fn health_loop(list: Weak<Vec<Mirror>>, client: Client) {
    let tick = match list.upgrade() {
        Some(l) => l.iter().map(|m| m.interval).min().unwrap_or(Duration::from_secs(5)),
        None => return,
    };
    let mut waited: Vec<Duration> = Vec::new();
    loop {
        std::thread::sleep(tick);
        let Some(list) = list.upgrade() else { return };
        waited.resize(list.len(), Duration::ZERO);
        for (m, w) in list.iter().zip(waited.iter_mut()) {
            if m.usable() {
                *w = Duration::ZERO;
                continue;
            }
            *w += tick;
            if *w < m.interval {
                continue;
            }
            *w = Duration::ZERO;
            let ok = client
                .get(m.ping.clone())
                .headers(m.headers.clone())
                .send()
                .is_ok_and(|r| r.status() < StatusCode::INTERNAL_SERVER_ERROR);
            if ok {
                tracing::info!(mirror = %m.shown(), "registry mirror answers again; using it");
                m.succeeded();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str) -> MirrorConfig {
        MirrorConfig {
            host: host.into(),
            headers: vec![("X-Dragonfly-Registry".into(), "https://index.docker.io".into())],
            health_check_interval: Duration::from_secs(5),
            failure_limit: 2,
        }
    }

    #[test]
    fn urls_and_failure_streaks() {
        let ms = Mirrors::new(
            &[cfg("http://127.0.0.1:1"), cfg("mirror.example:5000/"), cfg("https://m2.example")],
            "https",
            "a/b",
            Duration::from_secs(1),
        )
        .unwrap();
        let all = ms.all();
        assert_eq!(all[0].base.as_str(), "http://127.0.0.1:1/v2/a/b/blobs/");
        assert_eq!(all[1].base.as_str(), "https://mirror.example:5000/v2/a/b/blobs/");
        assert_eq!(all[2].ping.as_str(), "https://m2.example/v2/");
        assert_eq!(all[0].headers.get("x-dragonfly-registry").unwrap(), "https://index.docker.io");
        assert_eq!(ms.usable().count(), 3);
        assert!(!all[0].failed());
        assert!(all[0].failed()); // the second failure in a row sets it aside
        assert_eq!(ms.usable().count(), 2);
        all[0].succeeded();
        assert_eq!(ms.usable().count(), 3);
    }

    #[test]
    fn bad_mirrors_are_refused() {
        for (c, says) in [
            (cfg("ftp://x"), "http(s)"),
            (cfg("http://x/path"), "http(s)"),
            (MirrorConfig { headers: vec![("bad name".into(), "v".into())], ..cfg("x") }, "header name"),
            (MirrorConfig { health_check_interval: Duration::ZERO, ..cfg("x") }, "more than 0"),
        ] {
            let e = Mirrors::new(&[c], "https", "a/b", Duration::from_secs(1)).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = Mirrors::new(
            &[MirrorConfig { headers: vec![("Authorization".into(), "Bearer s3cr3t\n".into())], ..cfg("x") }],
            "https",
            "a/b",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn health_check_puts_a_mirror_back() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let mut b = [0u8; 1024];
                let _ = c.read(&mut b);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
            }
        });
        let c = MirrorConfig {
            health_check_interval: Duration::from_millis(50),
            ..cfg(&format!("http://127.0.0.1:{port}"))
        };
        let ms = Mirrors::new(&[c], "https", "a/b", Duration::from_secs(1)).unwrap();
        ms.all()[0].failed();
        ms.all()[0].failed();
        assert_eq!(ms.usable().count(), 0);
        let t0 = std::time::Instant::now();
        while ms.usable().count() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "the health check never put the mirror back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod fallback_tests;
