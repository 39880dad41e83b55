//! The Unix socket client against a small in-process server.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::*;
use crate::backend::read_full;

/// Serves `blob` as `/b/<id>` on a Unix socket: ranges answered with 206
/// (or 200 with the whole blob when `ignore_range`), 416 past the end,
/// 404 for other paths.
fn serve(dir: &std::path::Path, blob: Vec<u8>, ignore_range: bool) -> PathBuf {
    let sock = dir.join("blobs.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range = None;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.trim().strip_prefix("Range: bytes=") {
                    let (a, b) = v.split_once('-').unwrap();
                    range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
                }
            }
            let len = blob.len() as u64;
            let (head, body) = if path != "/b/blob1" {
                ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".to_string(), Vec::new())
            } else if ignore_range || range.is_none() {
                (format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"), blob.clone())
            } else {
                let (a, b) = range.unwrap();
                if a >= len {
                    (format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"), Vec::new())
                } else {
                    let b = b.min(len - 1);
                    let body = blob[a as usize..=b as usize].to_vec();
                    (format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\n", body.len()), body)
                }
            };
            let _ = conn.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    sock
}

fn backend(sock: PathBuf) -> HttpProxyBackend {
    let cfg = HttpProxyConfig {
        addr: HttpProxyAddr::UnixSocket(sock),
        path: "/b".into(),
        http: HttpConfig { timeout: Duration::from_secs(2), ..Default::default() },
    };
    HttpProxyBackend::new(&cfg).unwrap()
}

#[test]
fn ranged_reads_over_a_unix_socket() {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for ignore_range in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(serve(dir.path(), blob.clone(), ignore_range));
        let r = b.open_blob("blob1").unwrap();
        assert_eq!(r.blob_size().unwrap(), blob.len() as u64);
        let mut buf = vec![0u8; 5000];
        read_full(&*r, "blob1", &mut buf, 1234).unwrap();
        assert_eq!(buf, blob[1234..6234]);
        let mut last = [0u8; 10];
        assert_eq!(r.read_at(&mut last, 99_999).unwrap(), 1);
        assert_eq!(last[0], blob[99_999]);
        assert_eq!(r.read_at(&mut last, 100_000).unwrap(), 0);
        let e = b.open_blob("nope").unwrap().blob_size().unwrap_err();
        assert!(matches!(e, StorageError::BlobNotFound { .. }), "{e}");
        assert!(e.to_string().contains("blobs.sock:/b/nope"), "{e}");
    }
}

#[test]
fn dead_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path().join("missing.sock"));
    let e = b.open_blob("blob1").unwrap().blob_size().unwrap_err().to_string();
    assert!(e.contains("cannot connect") && e.contains("missing.sock"), "{e}");
}
