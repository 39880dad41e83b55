//! What the S3 and OSS backends share: objects named `<prefix><blob id>`
//! in one bucket, read with signed ranged `GET`s, sized with `HEAD`, and
//! written with signed `PUT`s.
//!
//! A store differs only in how it forms URLs and signs requests
//! ([`Signer`]); everything else (retries through the shared HTTP layer,
//! mapping statuses to errors that say what to check, pulling the service's
//! error code out of its XML answer) is written once here. Requests are
//! signed per attempt, so a retried request carries a fresh date.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use reqwest::blocking::{Request, Response};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, RANGE};
use reqwest::{Method, StatusCode, Url};

use super::http::{range_header, read_range, redact, status_failure, transport_failure, Attempt, Failure, HttpClient};
use super::{check_blob_id, BlobBackend, BlobReader};
use crate::error::{Result, StorageError};

/// How one object store forms URLs and authenticates requests.
pub(crate) trait Signer: Send + Sync + std::fmt::Debug + 'static {
    /// The service, for messages: "S3", "OSS".
    fn service(&self) -> &'static str;

    /// The URL of object `key` (not yet percent-encoded).
    fn object_url(&self, key: &str) -> Result<Url>;

    /// Adds the authentication headers to `req`, whose body is `body`
    /// (anonymous stores add nothing). Called once per attempt.
    fn sign(&self, req: &mut Request, body: &[u8]) -> Attempt<()>;

    /// What to check when the service refuses the credentials.
    fn auth_hint(&self) -> &'static str;
}

/// A bucket of blobs: the HTTP client, the key prefix and the signer.
#[derive(Debug)]
pub(crate) struct ObjectStore<S: Signer> {
    pub(crate) http: HttpClient,
    pub(crate) prefix: String,
    pub(crate) signer: S,
}

impl<S: Signer> ObjectStore<S> {
    /// The URL of blob `blob_id`.
    pub(crate) fn blob_url(&self, blob_id: &str) -> Result<Url> {
        check_blob_id(blob_id)?;
        self.signer.object_url(&format!("{}{}", self.prefix, blob_id))
    }

    /// Builds, signs and sends one request.
    pub(crate) fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Attempt<Response> {
        let mut b = self.http.client().request(method, url.clone());
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        if !body.is_empty() {
            b = b.header(CONTENT_LENGTH, body.len());
        }
        let mut req = b.body(body.clone()).build().map_err(|e| {
            Failure::Fatal(StorageError::BackendConfig(format!(
                "{}: cannot build a request: {e}",
                self.signer.service()
            )))
        })?;
        self.signer.sign(&mut req, &body)?;
        self.http.execute(req).map_err(transport_failure)
    }

    /// The failure an unexpected answer stands for: 403 is an
    /// authentication error quoting the service's error code, 404 a
    /// missing blob, 5xx/429 transient; `what` names the step.
    pub(crate) fn failure(&self, resp: Response, blob_id: &str, url: &Url, what: &str) -> Failure {
        let status = resp.status();
        let shown = redact(url);
        let headers = resp.headers().clone();
        let detail = error_detail(resp);
        let service = self.signer.service();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Fatal(StorageError::Auth {
                blob_id: blob_id.to_string(),
                url: shown,
                cause: format!("{what}: {service} answered {status}{detail}; {}", self.signer.auth_hint()),
            }),
            StatusCode::NOT_FOUND if !what.starts_with("upload") => {
                Failure::Fatal(StorageError::BlobNotFound { blob_id: blob_id.to_string(), tried: shown })
            }
            _ => {
                let hint = format!("{what}{detail}; check `endpoint`, `bucket_name` and the service's logs");
                status_failure(status, &headers, blob_id, &shown, &hint)
            }
        }
    }

    /// `HEAD` of blob `blob_id`: its size, or `None` when it does not exist.
    pub(crate) fn head(&self, blob_id: &str) -> Result<Option<u64>> {
        let url = self.blob_url(blob_id)?;
        self.http.retry(blob_id, &redact(&url), || {
            let resp = self.send(Method::HEAD, &url, &[], Vec::new())?;
            match resp.status() {
                s if s.is_success() => {
                    let len = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
                    len.map(Some).ok_or_else(|| {
                        Failure::Fatal(StorageError::Remote {
                            blob_id: blob_id.to_string(),
                            url: redact(&url),
                            cause: format!("{} answered HEAD without a Content-Length", self.signer.service()),
                        })
                    })
                }
                StatusCode::NOT_FOUND => Ok(None),
                // A HEAD answer has no body to say why: ask for one byte to
                // get the service's error code (SignatureDoesNotMatch, ...).
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                    let resp = self.send(Method::GET, &url, &[(RANGE.as_str(), range_header(0, 1))], Vec::new())?;
                    Err(self.failure(resp, blob_id, &url, "HEAD"))
                }
                _ => Err(self.failure(resp, blob_id, &url, "HEAD")),
            }
        })
    }
}

/// `: <Code>: <Message>` from an XML error body, or "" when there is none.
/// Services put no secrets in these (they name the string they signed at
/// most, which holds no key).
fn error_detail(resp: Response) -> String {
    let mut text = String::new();
    let _ = resp.take(64 << 10).read_to_string(&mut text);
    match (xml_value(&text, "Code"), xml_value(&text, "Message")) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        _ => String::new(),
    }
}

/// The text of the first `<tag>...</tag>` in `xml`, entity-decoded.
pub(crate) fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let v = &xml[start..end];
    Some(
        v.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Percent-encodes an object key for a URL path: everything but RFC 3986
/// unreserved characters and `/` (the form both S3 and OSS sign).
pub(crate) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A backend over an [`ObjectStore`].
#[derive(Debug)]
pub(crate) struct ObjectBackend<S: Signer> {
    pub(crate) store: Arc<ObjectStore<S>>,
}

impl<S: Signer> BlobBackend for ObjectBackend<S> {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        let url = self.store.blob_url(blob_id)?;
        Ok(Arc::new(ObjectBlob {
            store: self.store.clone(),
            blob_id: blob_id.to_string(),
            shown: redact(&url),
            url,
            size: OnceLock::new(),
        }))
    }
}

/// One object, read with ranged `GET`s.
#[derive(Debug)]
struct ObjectBlob<S: Signer> {
    store: Arc<ObjectStore<S>>,
    blob_id: String,
    url: Url,
    shown: String,
    size: OnceLock<u64>,
}

impl<S: Signer> BlobReader for ObjectBlob<S> {
    fn blob_size(&self) -> Result<u64> {
        if let Some(s) = self.size.get() {
            return Ok(*s);
        }
        match self.store.head(&self.blob_id)? {
            Some(s) => Ok(*self.size.get_or_init(|| s)),
            None => Err(StorageError::BlobNotFound { blob_id: self.blob_id.clone(), tried: self.shown.clone() }),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if buf.is_empty() || self.size.get().is_some_and(|&s| offset >= s) {
            return Ok(0);
        }
        let range = range_header(offset, buf.len() as u64);
        let r = self.store.http.retry(&self.blob_id, &self.shown, || {
            let resp = self.store.send(Method::GET, &self.url, &[(RANGE.as_str(), range.clone())], Vec::new())?;
            let status = resp.status();
            if !status.is_success() && status != StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(self.store.failure(resp, &self.blob_id, &self.url, "GET"));
            }
            read_range(resp, offset, buf, &self.blob_id, &self.shown)
        })?;
        if let Some(t) = r.total {
            let _ = self.size.set(t);
        }
        Ok(r.len)
    }
}

/// `v` as a header value (values we build are always valid).
pub(crate) fn header_value(v: &str) -> Attempt<HeaderValue> {
    HeaderValue::from_str(v).map_err(|e| Failure::Fatal(StorageError::BackendConfig(format!("bad header value: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_keys() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(xml_value(body, "Code").as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(xml_value(body, "Nope"), None);
        assert_eq!(xml_value("<ETag>&quot;abc&quot;</ETag>", "ETag").as_deref(), Some("\"abc\""));
        assert_eq!(encode_key("nydus/sha256:ab cd+é"), "nydus/sha256%3Aab%20cd%2B%C3%A9");
    }
}
