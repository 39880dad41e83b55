//! The signature against Aliyun's published worked example, and request shapes.

use super::*;
use crate::config::Secret;

/// The worked example of Aliyun's "Include signatures in the Authorization
/// header" page (https://help.aliyun.com/document_detail/31951.html, also
/// https://www.alibabacloud.com/help/en/oss/developer-reference/include-signatures-in-the-authorization-header
/// in its earlier revisions): a PUT of object `nelson` in bucket
/// `oss-example`, signed with AccessKeyId 44CF9590006BF252F707.
#[test]
fn aliyun_documented_example() {
    let headers = vec![
        ("X-OSS-Meta-Author".to_string(), "foo@bar.com".to_string()),
        ("X-OSS-Magic".to_string(), "abracadabra".to_string()),
    ];
    let canonical = canonical_oss_headers(&headers);
    assert_eq!(canonical, "x-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n");
    let sts = string_to_sign(
        "PUT",
        "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=",
        "text/html",
        "Thu, 17 Nov 2005 18:49:58 GMT",
        &canonical,
        "/oss-example/nelson",
    );
    assert_eq!(
        sts,
        "PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\nThu, 17 Nov 2005 18:49:58 GMT\n\
         x-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson"
    );
    assert_eq!(signature("OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV", &sts), "26NBxoKdsyly4EDv6inkoDft/yA=");
}

fn cfg(credentials: Option<AccessKey>) -> OssConfig {
    OssConfig {
        scheme: "https".into(),
        endpoint: "oss-cn-hangzhou.aliyuncs.com".into(),
        bucket_name: "oss-example".into(),
        object_prefix: "nydus/".into(),
        credentials,
        http: HttpConfig::default(),
    }
}

#[test]
fn signed_request_shape() {
    let key = AccessKey {
        id: Secret::new("44CF9590006BF252F707"),
        secret: Secret::new("OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV"),
    };
    let store = store(&cfg(Some(key)), &HttpConfig::default()).unwrap();
    let url = store.blob_url("abc").unwrap();
    assert_eq!(url.as_str(), "https://oss-example.oss-cn-hangzhou.aliyuncs.com/nydus/abc");
    let mut req = store.http.client().get(url).build().unwrap();
    store.signer.sign(&mut req, &[]).unwrap();
    let date = req.headers().get(DATE).unwrap().to_str().unwrap().to_string();
    assert!(date.ends_with(" GMT"), "{date}");
    let auth = req.headers().get(AUTHORIZATION).unwrap();
    assert!(auth.is_sensitive());
    let want =
        signature("OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV", &format!("GET\n\n\n{date}\n/oss-example/nydus/abc"));
    assert_eq!(auth.to_str().unwrap(), format!("OSS 44CF9590006BF252F707:{want}"));
    // The key is signed raw, the URL carries it encoded.
    assert_eq!(percent_decode("/nydus/sha256%3Aab%20c%zz"), "/nydus/sha256:ab c%zz");

    // Anonymous: a date, no Authorization.
    let store = super::store(&cfg(None), &HttpConfig::default()).unwrap();
    let mut req = store.http.client().get(store.blob_url("abc").unwrap()).build().unwrap();
    store.signer.sign(&mut req, &[]).unwrap();
    assert!(req.headers().get(AUTHORIZATION).is_none() && req.headers().get(DATE).is_some());
}
