//! Reads through mirrors against small HTTP servers on 127.0.0.1: a dead
//! first mirror falls back to the next, a mirror without the blob to the
//! registry; a failing mirror is set aside after `failure_limit` failures.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::registry::RegistryBackend;
use crate::backend::{read_full, BlobBackend};
use crate::config::{HttpConfig, MirrorConfig, RegistryConfig};

const ID: &str = "3f0a377ba0a4a460ecb616f6507ce0d8cfa3e704025d4fda3ed0c5ca05468728";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ranged reads of the blob.
    Serve,
    /// 404 to everything.
    Missing,
    /// 500 to everything.
    Broken,
}

/// A server answering in `mode`; returns its port and request counter.
fn server(mode: Mode, blob: Arc<Vec<u8>>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let (blob, hits) = (blob.clone(), h2.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = v.trim().split_once('-').unwrap();
                        range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let mut w = c;
                let head = |status: &str, extra: String, len: usize| {
                    format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
                };
                let out = match (mode, range) {
                    (Mode::Serve, Some((a, b))) => {
                        let b = b.min(blob.len() - 1);
                        let cr = format!("Content-Range: bytes {a}-{b}/{}\r\n", blob.len());
                        let mut o = head("206 Partial Content", cr, b - a + 1).into_bytes();
                        o.extend_from_slice(&blob[a..=b]);
                        o
                    }
                    (Mode::Missing, _) | (Mode::Serve, None) => head("404 Not Found", String::new(), 0).into_bytes(),
                    (Mode::Broken, _) => head("500 Internal Server Error", String::new(), 0).into_bytes(),
                };
                let _ = w.write_all(&out);
            });
        }
    });
    (port, hits)
}

fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn mirror(port: u16, failure_limit: u32) -> MirrorConfig {
    MirrorConfig {
        host: format!("http://127.0.0.1:{port}"),
        headers: Vec::new(),
        health_check_interval: Duration::from_secs(3600),
        failure_limit,
    }
}

fn backend(origin: u16, mirrors: &[MirrorConfig]) -> RegistryBackend {
    let cfg = RegistryConfig {
        scheme: "http".into(),
        host: format!("127.0.0.1:{origin}"),
        repo: "a/b".into(),
        auth: None,
        registry_token: None,
        blob_url_scheme: String::new(),
        blob_redirected_host: String::new(),
        mirrors: mirrors.to_vec(),
        http: HttpConfig {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    };
    RegistryBackend::new(cfg).unwrap()
}

fn blob() -> Arc<Vec<u8>> {
    Arc::new((0..100_000u32).map(|i| (i % 251) as u8).collect())
}

#[test]
fn dead_mirror_falls_back_to_the_next_then_to_the_registry() {
    let data = blob();
    let (origin, origin_hits) = server(Mode::Serve, data.clone());
    let (live, live_hits) = server(Mode::Serve, data.clone());
    let (missing, missing_hits) = server(Mode::Missing, data.clone());

    // Dead, then live: the live mirror serves, the registry is not asked.
    let be = backend(origin, &[mirror(dead_port(), 5), mirror(live, 5)]);
    let r = be.open_blob(ID).unwrap();
    let mut buf = vec![0u8; 5000];
    read_full(&*r, ID, &mut buf, 1234).unwrap();
    assert_eq!(buf, data[1234..6234]);
    assert_eq!(r.blob_size().unwrap(), data.len() as u64);
    assert!(live_hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(origin_hits.load(Ordering::SeqCst), 0);

    // Dead, then one without the blob: the registry serves.
    let be = backend(origin, &[mirror(dead_port(), 5), mirror(missing, 5)]);
    let r = be.open_blob(ID).unwrap();
    read_full(&*r, ID, &mut buf, 90_000).unwrap();
    assert_eq!(buf, data[90_000..95_000]);
    assert_eq!(missing_hits.load(Ordering::SeqCst), 1);
    assert_eq!(origin_hits.load(Ordering::SeqCst), 1);
}

#[test]
fn failing_mirror_is_set_aside_after_failure_limit() {
    let data = blob();
    let (origin, origin_hits) = server(Mode::Serve, data.clone());
    let (broken, broken_hits) = server(Mode::Broken, data.clone());
    let be = backend(origin, &[mirror(broken, 3)]);
    let r = be.open_blob(ID).unwrap();
    let mut buf = vec![0u8; 100];
    for i in 0..10u64 {
        read_full(&*r, ID, &mut buf, i * 100).unwrap();
        assert_eq!(buf, data[(i * 100) as usize..(i * 100 + 100) as usize]);
    }
    // Three failures, then the mirror is no longer asked (its health check
    // is an hour away); every read was served by the registry.
    assert_eq!(broken_hits.load(Ordering::SeqCst), 3);
    assert_eq!(origin_hits.load(Ordering::SeqCst), 10);
}
