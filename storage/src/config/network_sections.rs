//! The network-routing keys of backend sections: `proxy` (every HTTP
//! backend, upstream `ProxyConfig`) and the registry's `mirrors` (upstream
//! `MirrorConfig`, which upstream has since dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::fields::{join, Fields};
use super::{ConfigIssue, MirrorConfig, ProxyConfig};

/// Upstream's default for `check_interval` and `health_check_interval`, in seconds.
const DEFAULT_CHECK_INTERVAL: u64 = 5;
/// Upstream's default for a mirror's `failure_limit`.
const DEFAULT_FAILURE_LIMIT: u32 = 5;

/// `proxy`: `None` when absent or when its `url` is empty (upstream's
/// "no proxy").
pub(super) fn take_proxy(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<Option<ProxyConfig>, ConfigIssue> {
    let Some(mut p) = f.section("proxy", "a section of proxy settings (`url`, `fallback`, ...)")? else {
        return Ok(None);
    };
    let url: String = p.or("url", String::new())?;
    let ping_url: String = p.or("ping_url", String::new())?;
    let fallback: bool = p.or("fallback", true)?;
    let check_interval: u64 = p.or("check_interval", DEFAULT_CHECK_INTERVAL)?;
    let use_http: bool = p.or("use_http", false)?;
    let (url_key, ping_key, interval_key) = (p.path("url"), p.path("ping_url"), p.path("check_interval"));
    p.finish(warnings);
    if url.is_empty() {
        return Ok(None);
    }
    let url = http_url(&url, &url_key, false, "\"http://127.0.0.1:65001\"")?;
    let ping_url = if ping_url.is_empty() {
        None
    } else {
        Some(http_url(&ping_url, &ping_key, true, "\"http://127.0.0.1:65001/server/ping\"")?)
    };
    if check_interval == 0 || check_interval > 3600 {
        return Err(ConfigIssue::new(
            interval_key,
            format_args!("{check_interval} seconds is out of range; use 1 to 3600 (default {DEFAULT_CHECK_INTERVAL})"),
        ));
    }
    Ok(Some(ProxyConfig { url, ping_url, fallback, check_interval: Duration::from_secs(check_interval), use_http }))
}

/// An `http(s)://host[:port][/path]` URL, or the same without a scheme
/// (read as `http://`, as reqwest and upstream do). `with_path`: whether a
/// path may follow the host.
fn http_url(value: &str, key: &str, with_path: bool, example: &str) -> Result<String, ConfigIssue> {
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("http", value),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path_ok = if with_path { !path.contains([' ', '#']) } else { path.is_empty() || path == "/" };
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains(['@', '?', '#', ' ']) || !path_ok {
        let what = if with_path { "an http(s) URL" } else { "an http(s) proxy address without a path" };
        return Err(ConfigIssue::new(key, format_args!("`{value}` is not {what}; e.g. {example}")));
    }
    let path = if with_path { path } else { "" };
    Ok(format!("{scheme}://{host}{path}"))
}

/// `mirrors`: a list of `{host, headers, health_check_interval,
/// failure_limit, ping_url, auth_through}` sections.
pub(super) fn take_mirrors(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<Vec<MirrorConfig>, ConfigIssue> {
    let list: Vec<Value> = f.or("mirrors", Vec::new())?;
    let key = f.path("mirrors");
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut m = Fields::new(v, &join(&key, &format!("[{i}]")), "a mirror section (`host`, `headers`, ...)")?;
            let mirror = mirror(&mut m, warnings)?;
            m.finish(warnings);
            Ok(mirror)
        })
        .collect()
}

fn mirror(m: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<MirrorConfig, ConfigIssue> {
    let host: String = m.req("host")?;
    let headers: BTreeMap<String, String> = m.or("headers", BTreeMap::new())?;
    let interval: u64 = m.or("health_check_interval", DEFAULT_CHECK_INTERVAL)?;
    let failure_limit: u32 = m.or("failure_limit", DEFAULT_FAILURE_LIMIT)?;
    let ping_url: String = m.or("ping_url", String::new())?;
    let auth_through: bool = m.or("auth_through", false)?;
    let bare = !host.contains("://");
    let origin = host.trim_end_matches('/');
    let checked = http_url(origin, &m.path("host"), false, "\"http://127.0.0.1:5001\" or \"mirror.example:5000\"")?;
    let host = if bare { origin.to_string() } else { checked };
    for (name, value) in &headers {
        let name_ok =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !name_ok {
            return Err(ConfigIssue::new(m.path("headers"), format_args!("{name:?} is not an HTTP header name")));
        }
        // The value may be a credential: never echoed.
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(ConfigIssue::new(
                join(&m.path("headers"), name),
                "holds a control character (a line break?); HTTP header values cannot",
            ));
        }
    }
    if interval == 0 || interval > 3600 {
        return Err(ConfigIssue::new(
            m.path("health_check_interval"),
            format_args!("{interval} seconds is out of range; use 1 to 3600 (default {DEFAULT_CHECK_INTERVAL})"),
        ));
    }
    if failure_limit == 0 {
        return Err(ConfigIssue::new(
            m.path("failure_limit"),
            format_args!(
                "must be at least 1 (default {DEFAULT_FAILURE_LIMIT}): the failures in a row that set the mirror aside"
            ),
        ));
    }
    if !ping_url.is_empty() {
        warnings.push(ConfigIssue::new(m.path("ping_url"), "ignored: the health check always asks `<host>/v2/`"));
    }
    if auth_through {
        warnings.push(ConfigIssue::new(
            m.path("auth_through"),
            "ignored: the registry's credentials are never sent to mirrors; put what a mirror needs in `headers`",
        ));
    }
    Ok(MirrorConfig {
        host,
        headers: headers.into_iter().collect(),
        health_check_interval: Duration::from_secs(interval),
        failure_limit,
    })
}

#[cfg(test)]
#[path = "network_sections_tests.rs"]
mod tests;
