//! Blobs as objects of an S3 bucket (AWS, or any S3-compatible service).
//!
//! Objects are addressed path-style, `<scheme>://<endpoint>/<bucket>/<key>`
//! with `key = object_prefix + blob id`, which every S3 implementation
//! accepts. Requests are signed with AWS Signature Version 4 by the
//! `aws-sigv4` crate (headers `Authorization`, `x-amz-date` and
//! `x-amz-content-sha256`); with no access key configured they go
//! unsigned, for public buckets. Reads and sizes come from
//! `super::object_store`; uploads (`PutObject`, multipart for large
//! blobs) from module `upload`.

mod upload;

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::blocking::Request;
use reqwest::header::HeaderName;
use reqwest::Url;

use super::http::{Attempt, Failure, HttpClient};
use super::object_store::{encode_key, header_value, ObjectBackend, ObjectStore, Signer};
use super::BlobBackend;
use crate::config::{AccessKey, S3Config};
use crate::error::{Result, StorageError};
pub use upload::S3Uploader;

/// Signs requests to one bucket with SigV4 (service `s3`).
#[derive(Debug)]
pub(crate) struct S3Signer {
    /// `<scheme>://<endpoint>/<bucket>/`.
    base: Url,
    region: String,
    key: Option<AccessKey>,
}

impl S3Signer {
    fn new(cfg: &S3Config) -> Result<Self> {
        let base = Url::parse(&format!("{}://{}/{}/", cfg.scheme, cfg.endpoint, cfg.bucket_name)).map_err(|e| {
            StorageError::BackendConfig(format!("s3: cannot form a URL from scheme, endpoint and bucket_name: {e}"))
        })?;
        if cfg.credentials.is_some() && cfg.region.is_empty() {
            return Err(StorageError::BackendConfig("s3: `region` is needed to sign requests".into()));
        }
        Ok(Self { base, region: cfg.region.clone(), key: cfg.credentials.clone() })
    }
}

impl Signer for S3Signer {
    fn service(&self) -> &'static str {
        "S3"
    }

    fn object_url(&self, key: &str) -> Result<Url> {
        self.base
            .join(&format!("./{}", encode_key(key)))
            .map_err(|e| StorageError::BackendConfig(format!("s3: object key {key:?} does not form a URL: {e}")))
    }

    fn sign(&self, req: &mut Request, body: &[u8]) -> Attempt<()> {
        let Some(key) = &self.key else { return Ok(()) };
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Failure::Fatal(StorageError::BackendConfig(format!("s3: cannot sign the request ({what}): {e}")))
        };
        let identity: Identity =
            Credentials::new(key.id.expose(), key.secret.expose(), None, None, "nydus backend config").into();
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent (encoded once, not normalized) and wants
        // the payload hash in `x-amz-content-sha256`.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| bad("parameters", &e))?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let url = req.url().as_str().to_string();
        let signable = SignableRequest::new(
            req.method().as_str(),
            url.as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| bad("request", &e))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| bad("signing", &e))?.into_parts();
        for (name, value) in instructions.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad("header name", &e))?;
            req.headers_mut().insert(name, header_value(value)?);
        }
        Ok(())
    }

    fn auth_hint(&self) -> &'static str {
        "check `access_key_id`, `access_key_secret` and `region`, and that the key may read the bucket"
    }
}

/// The store `cfg` describes, with an HTTP client built from `http`.
fn store(cfg: &S3Config, http: &crate::config::HttpConfig) -> Result<ObjectStore<S3Signer>> {
    Ok(ObjectStore { http: HttpClient::new(http)?, prefix: cfg.object_prefix.clone(), signer: S3Signer::new(cfg)? })
}

/// The S3 backend for `cfg`. No request is sent yet.
pub fn new_backend(cfg: &S3Config) -> Result<Arc<dyn BlobBackend>> {
    Ok(Arc::new(ObjectBackend { store: Arc::new(store(cfg, &cfg.http)?) }))
}

#[cfg(test)]
mod tests;
