//! The proxy hop against small servers on 127.0.0.1: a "proxy" that
//! records the request lines it gets and answers them itself, and an
//! "origin" answering directly.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::http::HttpClient;
use crate::config::{HttpConfig, ProxyConfig};

/// A server answering requests with `status` and `body` (only pings get
/// `status` when `ping_only`, the rest 200); returns its port and the
/// request lines it saw.
fn server_with(body: &'static str, status: Arc<AtomicU16>, ping_only: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let (seen, status) = (s2.clone(), status.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut first = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if first.is_empty() {
                        first = line.trim().to_string();
                    }
                }
                let code = if ping_only && !first.contains("/ping") { 200 } else { status.load(Ordering::SeqCst) };
                seen.lock().unwrap().push(first);
                let mut w = c;
                let _ =
                    write!(w, "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
    (port, seen)
}

fn server(body: &'static str, status: Arc<AtomicU16>) -> (u16, Arc<Mutex<Vec<String>>>) {
    server_with(body, status, false)
}

fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client(proxy_port: u16, fallback: bool, ping: bool, use_http: bool) -> HttpClient {
    let cfg = HttpConfig {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        proxy: Some(ProxyConfig {
            url: format!("http://127.0.0.1:{proxy_port}"),
            ping_url: ping.then(|| format!("http://127.0.0.1:{proxy_port}/ping")),
            fallback,
            check_interval: Duration::from_secs(1),
            use_http,
        }),
        ..Default::default()
    };
    HttpClient::new(&cfg).unwrap()
}

fn get(c: &HttpClient, url: &str) -> reqwest::Result<(u16, String)> {
    let r = c.send(c.client().get(url))?;
    Ok((r.status().as_u16(), r.text()?))
}

fn ok() -> Arc<AtomicU16> {
    Arc::new(AtomicU16::new(200))
}

#[test]
fn requests_go_through_the_proxy_for_the_original_url() {
    let (proxy, seen) = server("via-proxy", ok());
    let (origin, direct) = server("direct", ok());
    let c = client(proxy, true, false, false);
    assert_eq!(get(&c, &format!("http://127.0.0.1:{origin}/v2/x")).unwrap(), (200, "via-proxy".into()));
    assert_eq!(*seen.lock().unwrap(), [format!("GET http://127.0.0.1:{origin}/v2/x HTTP/1.1")]);
    assert!(direct.lock().unwrap().is_empty());

    // use_http: an https URL reaches the proxy as plain http, not a tunnel.
    let c = client(proxy, true, false, true);
    assert_eq!(get(&c, "https://registry.example/v2/y").unwrap().1, "via-proxy");
    assert_eq!(seen.lock().unwrap().last().unwrap(), "GET http://registry.example/v2/y HTTP/1.1");
    // Without it, https is tunnelled (the test proxy refuses the CONNECT).
    let c = client(proxy, false, false, false);
    assert!(get(&c, "https://registry.example/v2/z").is_err());
    assert_eq!(seen.lock().unwrap().last().unwrap(), "CONNECT registry.example:443 HTTP/1.1");
}

#[test]
fn a_failing_proxy_falls_back_to_the_origin_at_once() {
    let (origin, direct) = server("direct", ok());
    let url = format!("http://127.0.0.1:{origin}/blob");
    // Dead proxy, fallback: the origin answers.
    let c = client(dead_port(), true, false, false);
    assert_eq!(get(&c, &url).unwrap(), (200, "direct".into()));
    // A proxy answering 5xx: the origin answers too.
    let (bad, bad_seen) = server("oops", Arc::new(AtomicU16::new(502)));
    let c = client(bad, true, false, false);
    assert_eq!(get(&c, &url).unwrap(), (200, "direct".into()));
    assert_eq!(bad_seen.lock().unwrap().len(), 1);
    assert_eq!(direct.lock().unwrap().len(), 2);
    // Without fallback the proxy's failure is the request's.
    let c = client(dead_port(), false, false, false);
    let e = get(&c, &url).unwrap_err();
    assert!(e.is_connect(), "{e}");
    let c = client(bad, false, false, false);
    assert_eq!(get(&c, &url).unwrap().0, 502);
    assert_eq!(direct.lock().unwrap().len(), 2);
}

#[test]
fn health_checks_switch_between_proxy_and_origin() {
    let status = ok();
    let (proxy, seen) = server_with("via-proxy", status.clone(), true);
    let (origin, _) = server("direct", ok());
    let url = format!("http://127.0.0.1:{origin}/blob");
    let c = client(proxy, true, true, false);
    let wait_for = |want: &str| {
        let t0 = Instant::now();
        loop {
            if get(&c, &url).unwrap().1 == want {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "never switched to {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("via-proxy");
    // The proxy's ping fails: reads go straight to the origin, and the
    // proxy sees only pings.
    status.store(503, Ordering::SeqCst);
    wait_for("direct");
    let before = seen.lock().unwrap().iter().filter(|l| !l.contains("/ping")).count();
    for _ in 0..5 {
        assert_eq!(get(&c, &url).unwrap().1, "direct");
    }
    assert_eq!(seen.lock().unwrap().iter().filter(|l| !l.contains("/ping")).count(), before);
    assert!(seen.lock().unwrap().iter().any(|l| l == "GET /ping HTTP/1.1"));
    // It recovers: reads go through it again.
    status.store(200, Ordering::SeqCst);
    wait_for("via-proxy");
}

#[test]
fn a_refused_connection_sets_a_checked_proxy_aside() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (origin, _) = server("direct", ok());
    let url = format!("http://127.0.0.1:{origin}/blob");
    let c = client(port, true, true, false);
    assert_eq!(get(&c, &url).unwrap().1, "direct");
    // Now known unhealthy (the ping agrees): no more tries at the proxy.
    let t0 = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&c, &url).unwrap().1, "direct");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}
