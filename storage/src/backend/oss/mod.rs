//! Blobs as objects of an Aliyun OSS bucket.
//!
//! Objects are addressed virtual-hosted style,
//! `<scheme>://<bucket>.<endpoint>/<key>` with `key = object_prefix + blob
//! id`. Requests carry OSS's V1 header signature:
//!
//! ```text
//! Authorization: OSS <AccessKeyId>:<Signature>
//! Signature = base64(HMAC-SHA1(AccessKeySecret,
//!     VERB \n Content-MD5 \n Content-Type \n Date \n
//!     CanonicalizedOSSHeaders CanonicalizedResource))
//! ```
//!
//! where CanonicalizedOSSHeaders are the `x-oss-*` headers, lower-cased,
//! sorted, one `name:value\n` each, and CanonicalizedResource is
//! `/<bucket>/<key>` (the key not URL-encoded). Without an access key the
//! requests go unsigned, for public-read buckets. Reads and sizes come from
//! `super::object_store`; uploads are a single `PutObject`.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::blocking::Request;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, DATE};
use reqwest::{Method, Url};
use sha1::Sha1;

use super::http::{redact, Attempt, HttpClient};
use super::object_store::{encode_key, header_value, ObjectBackend, ObjectStore, Signer};
use super::upload::{read_piece, BlobUploader};
use super::BlobBackend;
use crate::config::{AccessKey, HttpConfig, OssConfig};
use crate::error::{Result, StorageError};

/// Each upload may take at least this long, whatever `timeout` says.
const MIN_UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// OSS's largest single `PutObject` (5 GiB).
const MAX_PUT_SIZE: u64 = 5 << 30;

/// Signs requests to one bucket with OSS's V1 header signature.
#[derive(Debug)]
pub(crate) struct OssSigner {
    /// `<scheme>://<bucket>.<endpoint>/`.
    base: Url,
    bucket: String,
    key: Option<AccessKey>,
}

impl OssSigner {
    fn new(cfg: &OssConfig) -> Result<Self> {
        let base = Url::parse(&format!("{}://{}.{}/", cfg.scheme, cfg.bucket_name, cfg.endpoint)).map_err(|e| {
            StorageError::BackendConfig(format!("oss: cannot form a URL from scheme, bucket_name and endpoint: {e}"))
        })?;
        Ok(Self { base, bucket: cfg.bucket_name.clone(), key: cfg.credentials.clone() })
    }
}

impl Signer for OssSigner {
    fn service(&self) -> &'static str {
        "OSS"
    }

    fn object_url(&self, key: &str) -> Result<Url> {
        self.base
            .join(&format!("./{}", encode_key(key)))
            .map_err(|e| StorageError::BackendConfig(format!("oss: object key {key:?} does not form a URL: {e}")))
    }

    fn sign(&self, req: &mut Request, _body: &[u8]) -> Attempt<()> {
        let date = httpdate::fmt_http_date(SystemTime::now());
        req.headers_mut().insert(DATE, header_value(&date)?);
        let Some(key) = &self.key else { return Ok(()) };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let oss_headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-oss-"))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let resource = format!("/{}{}", self.bucket, percent_decode(req.url().path()));
        let sts = string_to_sign(
            req.method().as_str(),
            &header("content-md5"),
            &header(CONTENT_TYPE.as_str()),
            &date,
            &canonical_oss_headers(&oss_headers),
            &resource,
        );
        let auth = format!("OSS {}:{}", key.id.expose(), signature(key.secret.expose(), &sts));
        let mut value = header_value(&auth)?;
        value.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    fn auth_hint(&self) -> &'static str {
        "check `access_key_id` and `access_key_secret`, the machine's clock (OSS refuses dates 15 minutes off), and that the key may read the bucket"
    }
}

/// The text OSS signs.
fn string_to_sign(verb: &str, md5: &str, content_type: &str, date: &str, oss_headers: &str, resource: &str) -> String {
    format!("{verb}\n{md5}\n{content_type}\n{date}\n{oss_headers}{resource}")
}

/// `x-oss-*` headers as OSS canonicalizes them: lower-case names, sorted,
/// values trimmed, one `name:value\n` each.
fn canonical_oss_headers(headers: &[(String, String)]) -> String {
    let mut v: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .filter(|(k, _)| k.starts_with("x-oss-"))
        .collect();
    v.sort();
    v.iter().map(|(k, v)| format!("{k}:{v}\n")).collect()
}

/// base64(HMAC-SHA1(secret, text)).
fn signature(secret: &str, text: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Undoes URL percent-encoding (OSS signs the raw object key).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn store(cfg: &OssConfig, http: &HttpConfig) -> Result<ObjectStore<OssSigner>> {
    Ok(ObjectStore { http: HttpClient::new(http)?, prefix: cfg.object_prefix.clone(), signer: OssSigner::new(cfg)? })
}

/// The OSS backend for `cfg`. No request is sent yet.
pub fn new_backend(cfg: &OssConfig) -> Result<Arc<dyn BlobBackend>> {
    Ok(Arc::new(ObjectBackend { store: Arc::new(store(cfg, &cfg.http)?) }))
}

/// Puts blobs into one OSS bucket with `PutObject`.
#[derive(Debug)]
pub struct OssUploader {
    store: ObjectStore<OssSigner>,
}

impl OssUploader {
    /// Check `cfg` and build the client. No request is sent yet.
    pub fn new(cfg: &OssConfig) -> Result<Self> {
        let mut http = cfg.http.clone();
        http.timeout = http.timeout.max(MIN_UPLOAD_TIMEOUT);
        Ok(Self { store: store(cfg, &http)? })
    }
}

impl BlobUploader for OssUploader {
    fn blob_exists(&self, blob_id: &str) -> Result<bool> {
        Ok(self.store.head(blob_id)?.is_some())
    }

    fn upload(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let url = self.store.blob_url(blob_id)?;
        if size > MAX_PUT_SIZE {
            return Err(StorageError::Unsupported(format!(
                "blob {blob_id} has {size} bytes; OSS takes at most 5 GiB in one PutObject (multipart uploads to OSS are not supported)"
            )));
        }
        progress(0);
        let mut data = Vec::new();
        read_piece(file, blob_id, 0, size as usize, &mut data)?;
        let ct = [(CONTENT_TYPE.as_str(), "application/octet-stream".to_string())];
        self.store.http.retry(blob_id, &redact(&url), || {
            let resp = self.store.send(Method::PUT, &url, &ct, data.clone())?;
            if !resp.status().is_success() {
                return Err(self.store.failure(resp, blob_id, &url, "upload (PutObject)"));
            }
            Ok(())
        })?;
        progress(size);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
