//! A small blocking client for the API socket (one request per connection).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::ApiError;

/// A response as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|e| ApiError::BadResponse(format!("body is not JSON: {e}")))
    }

    /// The error message of a non-2xx reply (`message` of the error body, else the body).
    pub fn message(&self) -> String {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(v) if v["message"].is_string() => v["message"].as_str().unwrap_or_default().to_string(),
            _ => self.body.clone(),
        }
    }
}

/// Client of one daemon's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    sock: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the socket at `sock`; requests time out after 60 s.
    pub fn new(sock: &Path) -> Self {
        Self { sock: sock.to_path_buf(), timeout: Duration::from_secs(60) }
    }

    /// Send `method path_and_query` with an optional JSON body.
    pub fn request(&self, method: &str, path_and_query: &str, body: Option<&str>) -> Result<Reply, ApiError> {
        let mut s = UnixStream::connect(&self.sock)
            .map_err(|source| ApiError::Connect { path: self.sock.display().to_string(), source })?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let body = body.unwrap_or("");
        let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        parse_reply(&raw)
    }

    /// GET a JSON document; a non-2xx answer is an error carrying the daemon's message.
    pub fn get_json(&self, path_and_query: &str) -> Result<Value, ApiError> {
        let r = self.request("GET", path_and_query, None)?;
        if !r.ok() {
            return Err(ApiError::BadResponse(format!("HTTP {}: {}", r.status, r.message())));
        }
        r.json()
    }
}

/// Split a raw HTTP/1.1 response into status and body.
fn parse_reply(raw: &[u8]) -> Result<Reply, ApiError> {
    let bad = |m: &str| ApiError::BadResponse(m.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut body = raw[split + 4..].to_vec();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        if k.eq_ignore_ascii_case("content-length") {
            let n: usize = v.trim().parse().map_err(|_| bad("bad Content-Length"))?;
            if body.len() < n {
                return Err(bad("body shorter than Content-Length"));
            }
            body.truncate(n);
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked") {
            return Err(bad("chunked responses are not expected"));
        }
    }
    let body = String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let r = parse_reply(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 35\r\n\r\n{\"code\":\"NotFound\",\"message\":\"x y\"}",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.message(), "x y");
        let r = parse_reply(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(r.ok());
        assert_eq!(r.json().unwrap(), Value::Null);
        assert!(parse_reply(b"garbage").is_err());
    }

    #[test]
    fn missing_socket_says_how_to_fix_it() {
        let d = tempfile::tempdir().unwrap();
        let e = Client::new(&d.path().join("none.sock")).request("GET", "/api/v1/daemon", None).unwrap_err();
        assert!(e.to_string().contains("is nydusd running with --apisock"), "{e}");
    }
}
