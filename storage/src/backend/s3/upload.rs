//! Storing blobs in S3 at build time.
//!
//! A blob of at most one part goes up in a single `PutObject`. A larger one
//! uses a multipart upload: `POST ?uploads` opens it, each part is a
//! `PUT ?partNumber=N&uploadId=U` (S3 wants every part but the last to be
//! at least 5 MiB), and `POST ?uploadId=U` with the list of part ETags
//! completes it. Each request is retried on its own; when the upload fails
//! for good it is aborted (`DELETE ?uploadId=U`) so the bucket keeps no
//! orphan parts. `HEAD` tells whether the blob is there already.

use std::fs::File;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, ETAG};
use reqwest::{Method, Url};

use super::{store, S3Signer};
use crate::backend::http::{redact, Failure};
use crate::backend::object_store::{xml_value, ObjectStore};
use crate::backend::upload::{read_piece, BlobUploader};
use crate::config::S3Config;
use crate::error::{Result, StorageError};

/// Bytes per part (S3's minimum is 5 MiB); blobs up to this size go in one
/// `PutObject`.
const PART_SIZE: u64 = 8 << 20;
/// S3's largest part number: the part size grows for blobs beyond 80 GiB.
const MAX_PARTS: u64 = 10_000;
/// Each upload request may take at least this long, whatever `timeout`
/// says (it bounds whole requests, and parts are large).
const MIN_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Puts blobs into one S3 bucket.
#[derive(Debug)]
pub struct S3Uploader {
    store: ObjectStore<S3Signer>,
    part_size: u64,
}

impl S3Uploader {
    /// Check `cfg` and build the client. No request is sent yet.
    pub fn new(cfg: &S3Config) -> Result<Self> {
        let mut http = cfg.http.clone();
        http.timeout = http.timeout.max(MIN_UPLOAD_TIMEOUT);
        Ok(Self { store: store(cfg, &http)?, part_size: PART_SIZE })
    }

    fn put_object(&self, blob_id: &str, url: &Url, file: &File, size: u64) -> Result<()> {
        let mut data = Vec::new();
        read_piece(file, blob_id, 0, size as usize, &mut data)?;
        let ct = [(CONTENT_TYPE.as_str(), "application/octet-stream".to_string())];
        self.store.http.retry(blob_id, &redact(url), || {
            let resp = self.store.send(Method::PUT, url, &ct, data.clone())?;
            if !resp.status().is_success() {
                return Err(self.store.failure(resp, blob_id, url, "upload (PutObject)"));
            }
            Ok(())
        })
    }

    /// Sends one step of a multipart upload and returns the answer's body
    /// and `ETag`.
    fn step(
        &self,
        blob_id: &str,
        method: Method,
        url: &Url,
        body: Vec<u8>,
        what: &str,
    ) -> Result<(String, Option<String>)> {
        self.store.http.retry(blob_id, &redact(url), || {
            let resp = self.store.send(method.clone(), url, &[], body.clone())?;
            if !resp.status().is_success() {
                return Err(self.store.failure(resp, blob_id, url, what));
            }
            let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
            let text = resp.text().map_err(|e| Failure::transient(format!("{what}: reading the answer: {e}")))?;
            // CompleteMultipartUpload may answer 200 with an error inside.
            if let Some(code) = xml_value(&text, "Code").filter(|_| text.contains("<Error>")) {
                let cause = format!("{what}: S3 reported {code}");
                return Err(if code == "InternalError" || code == "SlowDown" {
                    Failure::transient(cause)
                } else {
                    Failure::Fatal(StorageError::Remote { blob_id: blob_id.into(), url: redact(url), cause })
                });
            }
            Ok((text, etag))
        })
    }

    fn multipart(&self, blob_id: &str, url: &Url, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let with_query = |q: &str| {
            let mut u = url.clone();
            u.set_query(Some(q));
            u
        };
        let (text, _) =
            self.step(blob_id, Method::POST, &with_query("uploads"), Vec::new(), "upload (CreateMultipartUpload)")?;
        let upload_id = xml_value(&text, "UploadId").ok_or_else(|| StorageError::Remote {
            blob_id: blob_id.into(),
            url: redact(url),
            cause: "CreateMultipartUpload answered without an UploadId".into(),
        })?;
        let id_query = format!("uploadId={}", encode_query(&upload_id));
        let result = self.put_parts(blob_id, &with_query, &id_query, file, size, progress);
        if result.is_err() {
            // Best effort: leave no orphan parts behind (they cost storage).
            let abort = with_query(&id_query);
            let _ = self.store.send(Method::DELETE, &abort, &[], Vec::new());
        }
        result
    }

    fn put_parts(
        &self,
        blob_id: &str,
        with_query: &dyn Fn(&str) -> Url,
        id_query: &str,
        file: &File,
        size: u64,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let mut done = 0;
        let mut parts = String::new();
        let mut buf = Vec::new();
        for number in 1.. {
            if done >= size {
                break;
            }
            let len = part_size.min(size - done);
            read_piece(file, blob_id, done, len as usize, &mut buf)?;
            let url = with_query(&format!("partNumber={number}&{id_query}"));
            let (_, etag) = self.step(blob_id, Method::PUT, &url, buf.clone(), "upload (UploadPart)")?;
            let etag = etag.ok_or_else(|| StorageError::Remote {
                blob_id: blob_id.into(),
                url: redact(&url),
                cause: format!("UploadPart {number} answered without an ETag"),
            })?;
            parts
                .push_str(&format!("<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>", xml_escape(&etag)));
            done += len;
            progress(done);
        }
        let body = format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>").into_bytes();
        self.step(blob_id, Method::POST, &with_query(id_query), body, "upload (CompleteMultipartUpload)")?;
        Ok(())
    }
}

impl BlobUploader for S3Uploader {
    fn blob_exists(&self, blob_id: &str) -> Result<bool> {
        Ok(self.store.head(blob_id)?.is_some())
    }

    fn upload(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let url = self.store.blob_url(blob_id)?;
        progress(0);
        if size <= self.part_size {
            self.put_object(blob_id, &url, file, size)?;
            progress(size);
            return Ok(());
        }
        self.multipart(blob_id, &url, file, size, progress)
    }
}

/// Percent-encodes a query value (upload ids may hold `+`, `/`, `=`).
fn encode_query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}
