//! `mirrors` and `proxy` as `nydus-image --backend-config` and the daemon
//! give them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{backend_from_json, BackendConfig, MirrorConfig, ProxyConfig, RegistryConfig};

fn registry(extra: Value) -> Result<(RegistryConfig, Vec<String>), String> {
    let mut v = json!({"host": "reg:5000", "repo": "a/b", "scheme": "http"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    match backend_from_json("registry", &v).map_err(|e| e.to_string())? {
        (BackendConfig::Registry(r), w) => Ok((r, w)),
        (other, _) => panic!("{other:?}"),
    }
}

#[test]
fn mirrors_are_parsed_with_upstream_defaults() {
    let (r, w) = registry(json!({"mirrors": [
        {"host": "http://127.0.0.1:5001", "headers": {"X-Dragonfly-Registry": "https://reg:5000"},
         "health_check_interval": 2, "failure_limit": 3},
        {"host": "mirror.example:5000/", "ping_url": "http://x/ping", "auth_through": true},
    ]}))
    .unwrap();
    assert_eq!(
        r.mirrors,
        vec![
            MirrorConfig {
                host: "http://127.0.0.1:5001".into(),
                headers: vec![("X-Dragonfly-Registry".into(), "https://reg:5000".into())],
                health_check_interval: Duration::from_secs(2),
                failure_limit: 3,
            },
            MirrorConfig {
                host: "mirror.example:5000".into(),
                headers: vec![],
                health_check_interval: Duration::from_secs(5),
                failure_limit: 5,
            },
        ]
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("mirrors[1].auth_through: ignored"), "{w:?}");
    assert!(w[1].starts_with("mirrors[1].ping_url: ignored"), "{w:?}");
    let (r, w) = registry(json!({})).unwrap();
    assert!(r.mirrors.is_empty() && w.is_empty());
}

#[test]
fn bad_mirrors_name_the_key() {
    for (m, want) in [
        (json!("http://m"), "mirrors: invalid type: string \"http://m\", expected a sequence"),
        (json!([{"headers": {}}]), "mirrors[0].host: required key is missing"),
        (json!([{"host": "ftp://m"}]), "mirrors[0].host: `ftp://m` is not an http(s) proxy address"),
        (json!([{"host": "http://m/v2/x"}]), "mirrors[0].host: `http://m/v2/x` is not"),
        (
            json!([{"host": "m", "health_check_interval": 0}]),
            "mirrors[0].health_check_interval: 0 seconds is out of range",
        ),
        (json!([{"host": "m", "failure_limit": 0}]), "mirrors[0].failure_limit: must be at least 1"),
        (json!([{"host": "m", "failure_limit": -1}]), "mirrors[0].failure_limit: invalid value: integer `-1`"),
        (
            json!([{"host": "m", "headers": {"bad name": "v"}}]),
            "mirrors[0].headers: \"bad name\" is not an HTTP header name",
        ),
        (json!([{"host": "m", "headers": {"X-A": 1}}]), "mirrors[0].headers: invalid type: integer `1`"),
        (json!([{"host": "m"}, 7]), "mirrors[1]: invalid type: integer `7`, expected a mirror section"),
    ] {
        let e = registry(json!({ "mirrors": m })).unwrap_err();
        assert!(e.starts_with(&format!("invalid backend configuration: {want}")), "{want}: {e}");
    }
    let e = registry(json!({"mirrors": [{"host": "m", "headers": {"Authorization": "Bearer s3cr3t\r\nX: y"}}]}))
        .unwrap_err();
    assert!(e.contains("mirrors[0].headers.Authorization: holds a control character"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
    // Unknown keys inside a mirror are warned with their index.
    let (_, w) = registry(json!({"mirrors": [{"host": "m", "colour": "red"}]})).unwrap();
    assert_eq!(w.len(), 1);
    assert!(w[0].starts_with("mirrors[0].colour: unknown key"), "{w:?}");
}

#[test]
fn proxy_is_parsed_for_every_http_backend() {
    let proxy = json!({"url": "localhost:6789", "ping_url": "localhost:6789/server/ping", "check_interval": 2,
                       "use_http": true, "fallback": false});
    let want = ProxyConfig {
        url: "http://localhost:6789".into(),
        ping_url: Some("http://localhost:6789/server/ping".into()),
        fallback: false,
        check_interval: Duration::from_secs(2),
        use_http: true,
    };
    let sections = [
        ("registry", json!({"host": "h", "repo": "r"})),
        ("s3", json!({"bucket_name": "bkt", "region": "r"})),
        ("oss", json!({"endpoint": "e", "bucket_name": "bkt"})),
        ("http-proxy", json!({"addr": "http://127.0.0.1:1"})),
    ];
    for (kind, mut v) in sections {
        v["proxy"] = proxy.clone();
        let (c, w) = backend_from_json(kind, &v).unwrap();
        assert!(w.is_empty(), "{kind}: {w:?}");
        let http = match c {
            BackendConfig::Registry(c) => c.http,
            BackendConfig::S3(c) => c.http,
            BackendConfig::Oss(c) => c.http,
            BackendConfig::HttpProxy(c) => c.http,
            BackendConfig::LocalFs(_) => unreachable!(),
        };
        assert_eq!(http.proxy.as_ref(), Some(&want), "{kind}");
    }
    // Defaults: fallback on, 5 s checks, no ping (always tried first).
    let (r, _) = registry(json!({"proxy": {"url": "https://p:1/"}})).unwrap();
    let p = r.http.proxy.unwrap();
    assert_eq!((p.url.as_str(), p.ping_url, p.fallback), ("https://p:1", None, true));
    assert_eq!((p.check_interval, p.use_http), (Duration::from_secs(5), false));
    // An empty url is "no proxy".
    let (r, _) = registry(json!({"proxy": {"url": "", "fallback": false}})).unwrap();
    assert_eq!(r.http.proxy, None);
}

#[test]
fn bad_proxies_name_the_key() {
    for (p, want) in [
        (json!("http://p"), "proxy: invalid type: string \"http://p\", expected a section of proxy settings"),
        (json!({"url": "socks5://p:1"}), "proxy.url: `socks5://p:1` is not an http(s) proxy address"),
        (json!({"url": "http://p:1/x"}), "proxy.url: `http://p:1/x` is not"),
        (json!({"url": "http://p:1", "ping_url": "ftp://p/x"}), "proxy.ping_url: `ftp://p/x` is not an http(s) URL"),
        (json!({"url": "http://p:1", "check_interval": 0}), "proxy.check_interval: 0 seconds is out of range"),
        (json!({"url": "http://p:1", "fallback": "yes"}), "proxy.fallback: invalid type: string \"yes\""),
    ] {
        let e = registry(json!({ "proxy": p })).unwrap_err();
        assert!(e.starts_with(&format!("invalid backend configuration: {want}")), "{want}: {e}");
    }
    let (_, w) = registry(json!({"proxy": {"url": "http://p:1", "colour": 1}})).unwrap();
    assert_eq!(w.len(), 1);
    assert!(w[0].starts_with("proxy.colour: unknown key"), "{w:?}");
}
