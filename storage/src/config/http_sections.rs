//! The connection keys every HTTP backend section shares (upstream repeats
//! them in each backend's struct): `timeout`, `connect_timeout`,
//! `retry_limit`, `skip_verify`, `ca_cert_files` and `proxy`.

use std::path::PathBuf;
use std::time::Duration;

use super::fields::Fields;
use super::network_sections::take_proxy;
use super::{ConfigIssue, HttpConfig};

/// Upstream's default for `timeout` and `connect_timeout`, in seconds.
const DEFAULT_HTTP_TIMEOUT: u64 = 5;

/// Takes the connection keys out of `f` and resolves them.
pub(super) fn take_http(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<HttpConfig, ConfigIssue> {
    let skip_verify: bool = f.or("skip_verify", false)?;
    let timeout: u64 = f.or("timeout", DEFAULT_HTTP_TIMEOUT)?;
    let connect_timeout: u64 = f.or("connect_timeout", DEFAULT_HTTP_TIMEOUT)?;
    // u8 as upstream: a larger value is a type error naming the key.
    let retry_limit: u8 = f.or("retry_limit", 0)?;
    let ca_cert_files = f.strings("ca_cert_files")?;
    for (v, name) in [(timeout, "timeout"), (connect_timeout, "connect_timeout")] {
        if v == 0 || v > 3600 {
            return Err(ConfigIssue::new(
                f.path(name),
                format_args!("{v} seconds is out of range; use 1 to 3600 (default {DEFAULT_HTTP_TIMEOUT})"),
            ));
        }
    }
    let proxy = take_proxy(f, warnings)?;
    Ok(HttpConfig {
        timeout: Duration::from_secs(timeout),
        connect_timeout: Duration::from_secs(connect_timeout),
        retry_limit: u32::from(retry_limit),
        skip_verify,
        ca_cert_files: ca_cert_files.into_iter().map(PathBuf::from).collect(),
        proxy,
        ..Default::default()
    })
}

/// Checks a `scheme` key: `http` or `https`.
pub(super) fn check_scheme(f: &Fields, scheme: &str, what: &str) -> Result<(), ConfigIssue> {
    if scheme != "http" && scheme != "https" {
        return Err(ConfigIssue::new(
            f.path("scheme"),
            format_args!("`{scheme}` is not a {what} scheme; use \"https\" or \"http\""),
        ));
    }
    Ok(())
}

/// Checks an `endpoint`/`host` value: a host name with an optional `:port`.
pub(super) fn check_host(f: &Fields, name: &str, value: &str, example: &str) -> Result<(), ConfigIssue> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Err(ConfigIssue::new(
            f.path(name),
            format_args!("must be a host name with an optional :port, without a scheme (set `scheme` instead), e.g. \"{example}\""),
        ));
    }
    if value.is_empty() || value.contains(['/', '@', '?', '#', ' ']) {
        return Err(ConfigIssue::new(
            f.path(name),
            format_args!("must be a host name with an optional :port, e.g. \"{example}\""),
        ));
    }
    Ok(())
}
