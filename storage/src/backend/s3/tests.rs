//! Request shapes; the signatures themselves are checked by the moto e2e
//! tests (tests/e2e/test_backend_s3.py), which enforce them.

use super::*;
use crate::config::{HttpConfig, Secret};

fn cfg(credentials: Option<AccessKey>) -> S3Config {
    S3Config {
        scheme: "http".into(),
        endpoint: "127.0.0.1:9000".into(),
        region: "us-east-1".into(),
        bucket_name: "blobs".into(),
        object_prefix: "nydus/".into(),
        credentials,
        http: HttpConfig::default(),
    }
}

#[test]
fn signed_and_anonymous_requests() {
    let key = AccessKey { id: Secret::new("AKIDEXAMPLE"), secret: Secret::new("wJalrXUtnFEMI/K7MDENG") };
    let st = store(&cfg(Some(key)), &HttpConfig::default()).unwrap();
    let url = st.blob_url("sha256:ab").unwrap();
    assert_eq!(url.as_str(), "http://127.0.0.1:9000/blobs/nydus/sha256%3Aab");
    let mut req = st.http.client().get(url).header("range", "bytes=0-9").build().unwrap();
    st.signer.sign(&mut req, &[]).unwrap();
    let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let auth = h("authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
    assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
    assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"), "{auth}");
    assert!(!auth.contains("wJalrXUtnFEMI"), "{auth}");
    // SHA-256 of the empty body.
    assert_eq!(h("x-amz-content-sha256").unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert!(h("x-amz-date").is_some());

    let st = store(&cfg(None), &HttpConfig::default()).unwrap();
    let mut req = st.http.client().get(st.blob_url("ab").unwrap()).build().unwrap();
    st.signer.sign(&mut req, &[]).unwrap();
    assert!(req.headers().is_empty(), "{:?}", req.headers());
    assert!(format!("{st:?}").contains("S3Signer") && !format!("{:?}", cfg(None)).contains("wJal"));
}
