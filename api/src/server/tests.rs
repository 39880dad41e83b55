//! Both ends in one process: a real socket, the real server loop, the real client.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::client::Client;
use crate::ApiRequest;

struct Echo(AtomicUsize);

impl ApiHandler for Echo {
    fn handle(&self, req: ApiRequest) -> ApiResponse {
        self.0.fetch_add(1, Ordering::Relaxed);
        match req {
            ApiRequest::DaemonInfo => ApiResponse::json(json!({"state": "RUNNING"})),
            ApiRequest::Exit => ApiResponse::no_content(),
            ApiRequest::Mount { mountpoint, .. } => {
                // A slow operation must not hold up other requests.
                std::thread::sleep(Duration::from_millis(500));
                ApiResponse::json(json!({ "mp": mountpoint }))
            }
            other => ApiResponse::error(400, format!("{other:?}")),
        }
    }
}

struct Running {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _guard: SocketGuard,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let (l, guard) = bind_unix(&sock).unwrap();
    let (stop, rx) = watch::channel(false);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(serve_unix(l, Arc::new(Echo(AtomicUsize::new(0))), rx)).unwrap();
    });
    Running { _dir: dir, sock, stop, thread: Some(thread), _guard: guard }
}

#[test]
fn socket_is_private_and_a_live_one_is_not_taken_over() {
    let r = start();
    let mode = std::fs::metadata(&r.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let e = bind_unix(&r.sock).unwrap_err();
    assert!(matches!(e, ApiError::SocketInUse(_)), "{e}");
}

#[test]
fn stale_socket_is_replaced_and_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    drop(UnixListener::bind(&sock).unwrap()); // file stays, nobody listens
    let (_l, guard) = bind_unix(&sock).unwrap();
    drop(guard);
    assert!(!sock.exists());
    std::fs::write(&sock, b"x").unwrap();
    assert!(matches!(bind_unix(&sock).unwrap_err(), ApiError::NotASocket(_)));
}

#[test]
fn answers_and_errors() {
    let r = start();
    let c = Client::new(&r.sock);
    let reply = c.request("GET", "/api/v1/daemon", None).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json().unwrap()["state"], "RUNNING");
    assert_eq!(c.request("GET", "/nope", None).unwrap().status, 404);
    assert_eq!(c.request("POST", "/api/v1/daemon", Some("{}")).unwrap().status, 405);
    assert_eq!(c.request("PUT", "/api/v1/daemon", Some("{not json")).unwrap().status, 400);
    assert_eq!(c.request("PUT", "/api/v1/daemon/exit", None).unwrap().status, 204);
}

#[test]
fn oversized_and_half_sent_requests_do_not_block_others() {
    let r = start();
    // Declared too large: refused before reading.
    let mut s = UnixStream::connect(&r.sock).unwrap();
    s.write_all(b"PUT /api/v1/daemon HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Sent too large as chunks, without a length.
    let big = "x".repeat(MAX_BODY + 10);
    let mut s = UnixStream::connect(&r.sock).unwrap();
    let head = "PUT /api/v1/daemon HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes());
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"));
    // A half-sent request holds only its own connection.
    let mut half = UnixStream::connect(&r.sock).unwrap();
    half.write_all(b"GET /api/v1/dae").unwrap();
    let t = std::time::Instant::now();
    let c = Client::new(&r.sock);
    assert_eq!(c.request("GET", "/api/v1/daemon", None).unwrap().status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
    // ... and is dropped after the header timeout.
    half.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
    let n = half.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn slow_requests_run_concurrently() {
    let r = start();
    let t = std::time::Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let c = Client::new(&r.sock);
            std::thread::spawn(move || {
                let body = r#"{"source":"/b","config":"{}"}"#;
                c.request("POST", &format!("/api/v1/mount?mountpoint=/m{i}"), Some(body)).unwrap().status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    // Eight 0.5 s requests in well under 8 × 0.5 s.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
