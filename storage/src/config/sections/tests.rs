//! Backend sections as `nydus-image --backend-config` and the daemon give them.

use std::time::Duration;

use serde_json::json;

use super::*;

fn ok(kind: &str, v: Value) -> (BackendConfig, Vec<String>) {
    backend_from_json(kind, &v).unwrap_or_else(|e| panic!("{kind} refused: {e}"))
}

fn err(kind: &str, v: Value) -> String {
    match backend_from_json(kind, &v) {
        Ok(c) => panic!("{kind} accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn s3_section() {
    let (c, w) = ok(
        "s3",
        json!({"endpoint": "127.0.0.1:9000", "scheme": "http", "region": "us-east-1", "bucket_name": "blobs",
               "object_prefix": "nydus/", "access_key_id": "AKID", "access_key_secret": "SECRETKEY",
               "timeout": 9, "retry_limit": 2, "bogus": 1}),
    );
    assert_eq!(w, ["bogus: unknown key, ignored; check its spelling and place against docs/nydusd-config.md"]);
    let BackendConfig::S3(s) = &c else { panic!("{c:?}") };
    assert_eq!((s.scheme.as_str(), s.endpoint.as_str(), s.region.as_str()), ("http", "127.0.0.1:9000", "us-east-1"));
    assert_eq!((s.bucket_name.as_str(), s.object_prefix.as_str()), ("blobs", "nydus/"));
    let key = s.credentials.as_ref().unwrap();
    assert_eq!((key.id.expose(), key.secret.expose()), ("AKID", "SECRETKEY"));
    assert_eq!((s.http.timeout, s.http.retry_limit), (Duration::from_secs(9), 2));
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("SECRETKEY") && !dbg.contains("AKID"), "{dbg}");

    // Anonymous, default endpoint from the region.
    let (c, _) = ok("s3", json!({"region": "eu-west-1", "bucket_name": "pub.bucket"}));
    let BackendConfig::S3(s) = c else { panic!() };
    assert_eq!((s.endpoint.as_str(), s.scheme.as_str()), ("s3.eu-west-1.amazonaws.com", "https"));
    assert!(s.credentials.is_none());
}

#[test]
fn s3_errors_name_the_key() {
    let base = json!({"region": "r", "bucket_name": "bkt"});
    let with = |k: &str, v: Value| {
        let mut o = base.clone();
        o[k] = v;
        o
    };
    let cases = [
        (json!({"region": "r"}), "bucket_name: required key is missing"),
        (with("access_key_id", json!("id")), "access_key_secret: is empty while `access_key_id` is set"),
        (with("access_key_secret", json!("topsecret")), "access_key_id: is empty while `access_key_secret`"),
        (
            with("endpoint", json!("https://s3.example")),
            "endpoint: must be a host name with an optional :port, without a scheme",
        ),
        (with("scheme", json!("ftp")), "scheme: `ftp` is not a S3 scheme"),
        (with("bucket_name", json!("Bad_Bucket")), "bucket_name: `Bad_Bucket` is not a bucket name"),
        (with("object_prefix", json!("/abs")), "object_prefix: must not start with `/`"),
        (with("timeout", json!(0)), "timeout: 0 seconds is out of range"),
        (with("retry_limit", json!(-1)), "retry_limit: invalid value: integer `-1`, expected u8"),
        (
            json!({"bucket_name": "bkt", "access_key_id": "a", "access_key_secret": "topsecret"}),
            "region: required to sign requests",
        ),
    ];
    for (v, want) in cases {
        let e = err("s3", v);
        assert!(e.starts_with(&format!("invalid backend configuration: {want}")), "{want}: {e}");
        assert!(!e.contains("topsecret"), "{e}");
    }
}

#[test]
fn oss_section() {
    let (c, w) = ok(
        "oss",
        json!({"endpoint": "oss-cn-hangzhou.aliyuncs.com", "bucket_name": "my-bucket", "object_prefix": "p/",
               "access_key_id": "id", "access_key_secret": "sk", "proxy": {"url": "http://p:65001", "fallback": true}}),
    );
    assert!(w.is_empty(), "{w:?}");
    let BackendConfig::Oss(o) = c else { panic!() };
    assert_eq!(o.http.proxy.as_ref().map(|p| p.url.as_str()), Some("http://p:65001"));
    assert_eq!(
        (o.scheme.as_str(), o.endpoint.as_str(), o.bucket_name.as_str()),
        ("https", "oss-cn-hangzhou.aliyuncs.com", "my-bucket")
    );
    assert!(o.credentials.is_some());
    assert!(err("oss", json!({"bucket_name": "b-1"})).contains("endpoint: required key is missing"));
    assert!(err("oss", json!({"endpoint": "e", "bucket_name": "dotted.name"})).contains("is not a bucket name"));
}

#[test]
fn http_proxy_section() {
    let (c, w) = ok("http-proxy", json!({"addr": "http://127.0.0.1:9977/", "path": "/ns/repo/blobs/"}));
    assert!(w.is_empty());
    let BackendConfig::HttpProxy(h) = c else { panic!() };
    assert_eq!(h.addr, HttpProxyAddr::Url("http://127.0.0.1:9977".into()));
    assert_eq!(h.path, "/ns/repo/blobs");
    let (c, _) = ok("http-proxy", json!({"addr": "/run/blobs.sock"}));
    let BackendConfig::HttpProxy(h) = c else { panic!() };
    assert_eq!((h.addr, h.path.as_str()), (HttpProxyAddr::UnixSocket("/run/blobs.sock".into()), ""));
    for (v, want) in [
        (json!({}), "addr: required key is missing"),
        (json!({"addr": "run/x.sock"}), "addr: `run/x.sock` is neither an http(s) URL nor an absolute path"),
        (json!({"addr": "http://h:1/blobs"}), "addr: must be a server address without a path"),
        (json!({"addr": "http://h:1", "path": "/a/../b"}), "path: must be a URL path"),
    ] {
        let e = err("http-proxy", v);
        assert!(e.starts_with(&format!("invalid backend configuration: {want}")), "{want}: {e}");
    }
}

#[test]
fn types_and_sections() {
    assert_eq!(
        err("ftp", json!({})),
        "invalid backend configuration: backend type: unknown backend type `ftp`; use \"localfs\", \"registry\", \"s3\", \"oss\" or \"http-proxy\""
    );
    assert!(
        err("registry", json!("str")).contains("invalid type: string \"str\", expected a section of registry settings")
    );
    let (c, _) = ok("localfs", json!({"dir": "/b"}));
    assert_eq!(c, BackendConfig::LocalFs(LocalFsConfig { dir: Some("/b".into()), ..Default::default() }));
    assert_eq!(
        err("localfs", Value::Null),
        "invalid backend configuration: localfs needs `dir` (the directory holding the blobs) or `blob_file` (a single blob); set one of them"
    );
    let (c, w) = ok("registry", json!({"host": "h:5000", "repo": "a/b", "scheme": "http", "auth": "dXNlcjpwYXNz"}));
    assert!(w.is_empty());
    let BackendConfig::Registry(r) = c else { panic!() };
    assert_eq!(r.auth, Some(Secret::new("dXNlcjpwYXNz")));
    // Key paths are relative to where the caller says the section sits.
    let e = resolve_backend_section(BackendSection {
        kind: "s3",
        type_key: "backend.type",
        section: Some(json!({"bucket_name": "b"})),
        section_key: "backend.s3",
    })
    .unwrap_err();
    assert_eq!(e.key, "backend.s3.bucket_name");
    let e = resolve_backend_section(BackendSection {
        kind: "oss",
        type_key: "t",
        section: None,
        section_key: "backend.oss",
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "backend.oss: missing; the oss backend needs this section with `endpoint` and `bucket_name`"
    );
}
