//! A forward HTTP proxy in front of a backend (upstream `ProxyConfig`): how
//! a Dragonfly dfdaemon is plugged in.
//!
//! While the proxy is healthy, every request of the backend is sent to it
//! as a forward-proxy request for the original URL: `GET http://host/path`
//! in absolute form for `http` URLs, a `CONNECT host:443` tunnel for
//! `https` ones. With `use_http`, `https` URLs are downgraded to `http`
//! for the proxy hop, so that the proxy sees (and can cache) the requests
//! instead of an opaque tunnel; the proxy then talks to the origin itself.
//!
//! Health: with a `ping_url`, a background thread asks it every
//! `check_interval`; a 2xx/3xx answer means healthy. A request that cannot
//! connect to the proxy marks it unhealthy at once (the checker brings it
//! back). Without `ping_url` the proxy is always tried first.
//!
//! Fallback (default on): while the proxy is unhealthy, requests go to the
//! origin directly; a request through the proxy that fails (connection
//! error, timeout) or answers 5xx is sent again to the origin at once.
//! Requests whose body cannot be replayed (streamed uploads) get no
//! second try. Without fallback, requests always go to the proxy and its
//! failures are the request's failures (retried as any transient failure).
//!
//! Credentials: the request sent to the proxy is the request meant for the
//! origin, headers included. Over a `CONNECT` tunnel the proxy sees only
//! the host name; for `http` URLs, or with `use_http`, it sees the
//! `Authorization` header and signed headers of the forwarded request (as
//! with upstream). Only use a proxy you trust with them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, ClientBuilder, Request, Response};

use super::{transport_failure, Failure};
use crate::config::ProxyConfig;
use crate::error::{Result, StorageError};

/// Fallback warnings are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(2);

/// A proxy and its health.
#[derive(Debug)]
pub(crate) struct ForwardProxy {
    /// A client that sends everything through the proxy.
    client: Client,
    /// The proxy's address, for messages.
    url: String,
    healthy: AtomicBool,
    /// Whether a health checker runs (so that marking the proxy down is undone).
    checked: bool,
    fallback: bool,
    use_http: bool,
    /// When this proxy was set up, and the last fallback warning (ms after it).
    born: Instant,
    last_warn_ms: AtomicU64,
}

impl ForwardProxy {
    /// Build the proxy client from `builder` (which has the backend's
    /// timeouts and TLS settings) and start the health checker.
    pub(crate) fn new(cfg: &ProxyConfig, builder: ClientBuilder, ping_timeout: Duration) -> Result<Arc<Self>> {
        let bad = |m: String| StorageError::BackendConfig(format!("proxy {}: {m}", cfg.url));
        let proxy = reqwest::Proxy::all(&cfg.url).map_err(|e| bad(format!("not a proxy URL: {e}")))?;
        let client = builder.proxy(proxy).build().map_err(|e| bad(format!("cannot build the client: {e}")))?;
        let fp = Arc::new(Self {
            client,
            url: cfg.url.clone(),
            healthy: AtomicBool::new(true),
            checked: cfg.ping_url.is_some(),
            fallback: cfg.fallback,
            use_http: cfg.use_http,
            born: Instant::now(),
            last_warn_ms: AtomicU64::new(0),
        });
        if let Some(ping) = &cfg.ping_url {
            let ping = reqwest::Url::parse(ping).map_err(|e| bad(format!("ping_url is not a URL: {e}")))?;
            let pinger = Client::builder()
                .timeout(ping_timeout)
                .no_proxy()
                .build()
                .map_err(|e| bad(format!("cannot build the health-check client: {e}")))?;
            let weak = Arc::downgrade(&fp);
            let interval = cfg.check_interval;
            std::thread::Builder::new()
                .name("proxy-health".into())
                .spawn(move || health_loop(weak, pinger, ping, interval))
                .map_err(|e| bad(format!("cannot start the health checker: {e}")))?;
        }
        Ok(fp)
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, ok: bool) {
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        match (was, ok) {
            (true, false) => tracing::warn!(proxy = %self.url, fallback = self.fallback, "HTTP proxy is unhealthy"),
            (false, true) => {
                tracing::info!(proxy = %self.url, "HTTP proxy is healthy again; sending requests through it")
            }
            _ => {}
        }
    }

    /// Logs `what` unless a fallback warning was logged in the last
    /// [`WARN_EVERY`] (a dead proxy would otherwise log every read).
    fn warn_fallback(&self, what: &str) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64)
            && self.last_warn_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(proxy = %self.url, "{what}; sending the request to the backend directly");
        }
    }

    /// Sends `req` through the proxy, or to the origin with `direct` when
    /// the proxy is unhealthy or fails and fallback is on.
    pub(crate) fn execute(&self, direct: &Client, req: Request) -> reqwest::Result<Response> {
        if self.fallback && !self.healthy() {
            self.warn_fallback("HTTP proxy is unhealthy");
            return direct.execute(req);
        }
        let replay = if self.fallback { req.try_clone() } else { None };
        let mut via = req;
        if self.use_http && via.url().scheme() == "https" {
            // http and https are both special schemes: the switch cannot fail.
            let _ = via.url_mut().set_scheme("http");
        }
        let result = self.client.execute(via);
        let Some(replay) = replay else { return result };
        match result {
            Ok(resp) if resp.status().is_server_error() => {
                self.warn_fallback(&format!("HTTP proxy answered {}", resp.status()));
                direct.execute(replay)
            }
            Ok(resp) => Ok(resp),
            Err(e) => {
                if e.is_connect() && self.checked {
                    self.set_healthy(false);
                }
                let cause = match transport_failure(e) {
                    Failure::Transient { cause, .. } => cause,
                    Failure::Fatal(f) => f.to_string(),
                };
                self.warn_fallback(&format!("request through the HTTP proxy failed ({cause})"));
                direct.execute(replay)
            }
        }
    }
}

/// Pings `ping` now and every `interval` until the proxy is dropped.
fn health_loop(proxy: Weak<ForwardProxy>, client: Client, ping: reqwest::Url, interval: Duration) {
    loop {
        let ok = client.get(ping.clone()).send().is_ok_and(|r| r.status().is_success() || r.status().is_redirection());
        match proxy.upgrade() {
            Some(p) => p.set_healthy(ok),
            None => return,
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
#[path = "forward_proxy_tests.rs"]
mod tests;
