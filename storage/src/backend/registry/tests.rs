//! The registry backend against a tiny in-process HTTP server: Bearer flow
//! with one token fetch for many readers, redirects that never carry the
//! registry's credentials to another host, ranged reads, and retries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::backend::read_full;
use crate::config::{HttpConfig, Secret};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Req) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

/// A server on 127.0.0.1 answering every request with `handler`.
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn start(handler: Arc<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (h, l) = (handler.clone(), l2.clone());
                std::thread::spawn(move || serve(conn, &*h, &l));
            }
        });
        Self { port, log }
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Req { path, headers };
    log.lock().unwrap().push(req.clone());
    let (status, hdrs, body) = handler(&req);
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in hdrs {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut w = conn;
    let _ = w.write_all(out.as_bytes());
    let _ = w.write_all(&body);
    let _ = r.read(&mut [0u8; 1]);
}

/// The answer to a ranged GET of `blob`.
fn ranged(req: &Req, blob: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let range = req.header("range").and_then(|r| r.strip_prefix("bytes=")).unwrap();
    let (a, b) = range.split_once('-').unwrap();
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    if a >= blob.len() {
        return (416, vec![("Content-Range".into(), format!("bytes */{}", blob.len()))], vec![]);
    }
    let b = b.min(blob.len() - 1);
    let cr = format!("bytes {a}-{b}/{}", blob.len());
    (206, vec![("Content-Range".into(), cr)], blob[a..=b].to_vec())
}

fn config(port: u16) -> RegistryConfig {
    RegistryConfig {
        scheme: "http".into(),
        host: format!("127.0.0.1:{port}"),
        repo: "a/b".into(),
        auth: None,
        registry_token: None,
        blob_url_scheme: String::new(),
        blob_redirected_host: String::new(),
        mirrors: Vec::new(),
        http: HttpConfig {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry_limit: 2,
            retry_base_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(5),
            ..Default::default()
        },
    }
}

const ID: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn blob() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn bearer_flow_one_token_for_many_readers() {
    let data = blob();
    let tokens = Arc::new(AtomicUsize::new(0));
    let t2 = tokens.clone();
    let auth = auth::basic_auth("u", "p");
    let want_basic = format!("Basic {auth}");
    let port_cell = Arc::new(Mutex::new(0u16));
    let pc = port_cell.clone();
    let srv = Server::start(Arc::new(move |req: &Req| {
        if req.path.starts_with("/token") {
            assert_eq!(req.header("authorization"), Some(want_basic.as_str()));
            assert!(req.path.contains("scope=repository%3Aa%2Fb%3Apull"), "{}", req.path);
            assert!(req.path.contains("service=svc"), "{}", req.path);
            t2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            return (200, vec![], br#"{"token":"T1","expires_in":300}"#.to_vec());
        }
        if req.header("authorization") != Some("Bearer T1") {
            let realm = format!("http://127.0.0.1:{}/token", *pc.lock().unwrap());
            let ch = format!(r#"Bearer realm="{realm}",service="svc""#);
            return (401, vec![("WWW-Authenticate".into(), ch)], vec![]);
        }
        ranged(req, &data)
    }));
    *port_cell.lock().unwrap() = srv.port;
    let mut cfg = config(srv.port);
    cfg.auth = Some(Secret::new(auth));
    let be = RegistryBackend::new(cfg).unwrap();
    let r = be.open_blob(ID).unwrap();
    assert_eq!(r.blob_size().unwrap(), 10_000);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let r = r.clone();
            let data = blob();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1000];
                read_full(&*r, ID, &mut buf, i * 1000).unwrap();
                assert_eq!(buf, data[i as usize * 1000..(i as usize + 1) * 1000]);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(tokens.load(Ordering::SeqCst), 1);
    // Past the end: 0 bytes, no error.
    let mut buf = [0u8; 10];
    assert_eq!(r.read_at(&mut buf, 10_000).unwrap(), 0);
    assert_eq!(r.read_at(&mut buf, 9_995).unwrap(), 5);
    assert!(srv
        .requests()
        .iter()
        .all(|q| q.path.starts_with("/token") || q.path == format!("/v2/a/b/blobs/sha256:{ID}")));
}

#[test]
fn redirects_never_carry_the_registry_credentials() {
    let data = blob();
    let storage = Server::start(Arc::new(move |req: &Req| ranged(req, &data)));
    let sport = storage.port;
    let redirects = Arc::new(AtomicUsize::new(0));
    let r2 = redirects.clone();
    let registry = Server::start(Arc::new(move |req: &Req| {
        if req.header("authorization").is_none() {
            return (401, vec![("WWW-Authenticate".into(), r#"Basic realm="r""#.into())], vec![]);
        }
        r2.fetch_add(1, Ordering::SeqCst);
        let loc = format!("http://127.0.0.1:{sport}/bucket/blob?X-Sig=secret");
        (307, vec![("Location".into(), loc)], vec![])
    }));
    let mut cfg = config(registry.port);
    cfg.auth = Some(Secret::new(auth::basic_auth("u", "p")));
    let be = RegistryBackend::new(cfg).unwrap();
    let r = be.open_blob(ID).unwrap();
    let mut buf = vec![0u8; 100];
    for off in [0u64, 500, 9_000] {
        read_full(&*r, ID, &mut buf, off).unwrap();
        assert_eq!(buf, blob()[off as usize..off as usize + 100]);
    }
    // The redirect is cached: the registry was asked once.
    assert_eq!(redirects.load(Ordering::SeqCst), 1);
    let sreqs = storage.requests();
    assert_eq!(sreqs.len(), 3);
    for q in &sreqs {
        assert_eq!(q.header("authorization"), None, "{q:?}");
        assert_eq!(q.path, "/bucket/blob?X-Sig=secret");
    }
}

#[test]
fn transient_errors_are_retried_and_reported_without_secrets() {
    let data = blob();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let srv = Server::start(Arc::new(move |req: &Req| {
        if c2.fetch_add(1, Ordering::SeqCst) % 3 != 2 {
            return (503, vec![("Retry-After".into(), "0".into())], vec![]);
        }
        ranged(req, &data)
    }));
    let be = RegistryBackend::new(config(srv.port)).unwrap();
    let r = be.open_blob(ID).unwrap();
    let mut buf = [0u8; 10];
    read_full(&*r, ID, &mut buf, 20).unwrap();
    assert_eq!(buf[..], blob()[20..30]);

    // A dead registry: a bounded, clear error.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(dead);
    cfg.auth = Some(Secret::new(auth::basic_auth("user", "hunter2")));
    let be = RegistryBackend::new(cfg).unwrap();
    let e = be.open_blob(ID).unwrap().blob_size().unwrap_err().to_string();
    assert!(e.contains(ID) && e.contains("cannot connect") && e.contains("3 attempts"), "{e}");
    assert!(!e.contains("hunter2") && !e.contains(&auth::basic_auth("user", "hunter2")), "{e}");
}

#[test]
fn bad_configs_are_refused() {
    for (f, want) in [
        ((|c: &mut RegistryConfig| c.scheme = "ftp".into()) as fn(&mut RegistryConfig), "scheme"),
        (|c| c.host = "a/b".into(), "host"),
        (|c| c.repo = "../x".into(), "repo"),
        (|c| c.auth = Some(Secret::new("bob:hunter2")), "auth"),
    ] {
        let mut c = config(1);
        f(&mut c);
        let e = RegistryBackend::new(c).unwrap_err().to_string();
        assert!(e.contains(want) && !e.contains("hunter2"), "{e}");
    }
}
