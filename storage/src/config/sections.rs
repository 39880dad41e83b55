//! Upstream's backend sections, resolved into [`BackendConfig`].
//!
//! The same keys appear in v1 files (`device.backend.config`), v2 files
//! (`backend.<type>`) and `nydus-image --backend-config`; callers say where
//! the section sits ([`BackendSection`]) so that messages name the full key.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

use super::fields::Fields;
use super::http_sections::{check_host, check_scheme, take_http};
use super::network_sections::take_mirrors;
use super::{
    AccessKey, BackendConfig, HttpProxyAddr, HttpProxyConfig, LocalFsConfig, OssConfig, RegistryConfig, S3Config,
    Secret,
};

/// Environment variable holding base64 `user:password` for registries,
/// used when `auth` is absent (as upstream).
pub const IMAGE_PULL_AUTH: &str = "IMAGE_PULL_AUTH";

/// One thing to tell the operator about a configuration key: an unknown or
/// ignored key (a warning), or the reason a section was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `device.backend.config.host` ("" for the section
    /// handed to [`backend_from_json`] itself).
    pub key: String,
    /// What is wrong and what to do. Never contains a credential.
    pub message: String,
}

impl ConfigIssue {
    pub(crate) fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self { key: key.into(), message: message.to_string() }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// A backend section and where it sits in its document.
#[derive(Debug)]
pub struct BackendSection<'a> {
    /// The backend type, as written (`localfs`, `registry`, `s3`, `oss`, `http-proxy`).
    pub kind: &'a str,
    /// Key path of the type, for messages (`device.backend.type`).
    pub type_key: &'a str,
    /// The type's settings; `None` when the document has no such section.
    pub section: Option<Value>,
    /// Key path of the settings (`device.backend.config`, `backend.s3`).
    pub section_key: &'a str,
}

/// Resolves a backend section. Returns the configuration and warnings
/// (unknown keys, keys that have no effect), or the first problem found.
pub fn resolve_backend_section(input: BackendSection) -> Result<(BackendConfig, Vec<ConfigIssue>), ConfigIssue> {
    let mut warnings = Vec::new();
    let key = input.section_key;
    let needs = match input.kind {
        "localfs" => "`dir` or `blob_file`",
        "registry" => "`host` and `repo`",
        "s3" => "`bucket_name` and `region`",
        "oss" => "`endpoint` and `bucket_name`",
        "http-proxy" => "`addr`",
        "localdisk" => {
            return Err(ConfigIssue::new(
                input.type_key,
                "backend type `localdisk` is not supported; use `localfs` and copy the blobs out of the disk partitions into a directory",
            ))
        }
        other => {
            return Err(ConfigIssue::new(
                input.type_key,
                format_args!(
                    "unknown backend type `{other}`; use \"localfs\", \"registry\", \"s3\", \"oss\" or \"http-proxy\""
                ),
            ))
        }
    };
    let Some(section) = input.section else {
        return Err(ConfigIssue::new(
            key,
            format_args!("missing; the {} backend needs this section with {needs}", input.kind),
        ));
    };
    let expecting = format!("a section of {} settings ({needs}, ...)", input.kind);
    let expecting = match input.kind {
        "localfs" => "a section of localfs settings (`dir`, `blob_file`, `alt_dirs`)",
        "registry" => "a section of registry settings (`host`, `repo`, `auth`, ...)",
        _ => &expecting,
    };
    let mut f = Fields::new(section, key, expecting)?;
    let config = match input.kind {
        "localfs" => localfs(&mut f, &mut warnings)?,
        "registry" => registry(&mut f, &mut warnings)?,
        "s3" => s3(&mut f, &mut warnings)?,
        "oss" => oss(&mut f, &mut warnings)?,
        _ => http_proxy(&mut f, &mut warnings)?,
    };
    f.finish(&mut warnings);
    warnings.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((config, warnings))
}

/// Resolves the backend settings `config` of type `backend_type`, as given
/// to `nydus-image create --backend-type T --backend-config JSON`: `config`
/// is the object upstream puts under `device.backend.config` (`null` reads
/// as `{}`). Returns the configuration and warnings, each naming its key.
pub fn backend_from_json(backend_type: &str, config: &Value) -> crate::Result<(BackendConfig, Vec<String>)> {
    let section = if config.is_null() { Value::Object(Default::default()) } else { config.clone() };
    let input =
        BackendSection { kind: backend_type, type_key: "backend type", section: Some(section), section_key: "" };
    let (config, warnings) =
        resolve_backend_section(input).map_err(|e| crate::StorageError::BackendConfig(e.to_string()))?;
    Ok((config, warnings.iter().map(ToString::to_string).collect()))
}

fn localfs(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<BackendConfig, ConfigIssue> {
    let blob_file: String = f.or("blob_file", String::new())?;
    let dir: String = f.or("dir", String::new())?;
    let alt_dirs = f.strings("alt_dirs")?;
    let readahead: bool = f.or("readahead", false)?;
    let _readahead_sec: u64 = f.or("readahead_sec", 0)?;
    if dir.is_empty() && blob_file.is_empty() {
        return Err(ConfigIssue::new(
            f.path(""),
            "localfs needs `dir` (the directory holding the blobs) or `blob_file` (a single blob); set one of them",
        ));
    }
    if readahead {
        warnings.push(ConfigIssue::new(f.path("readahead"), "has no effect (upstream ignores it too); remove it"));
    }
    let path = |p: String| (!p.is_empty()).then(|| PathBuf::from(p));
    Ok(BackendConfig::LocalFs(LocalFsConfig {
        dir: path(dir),
        blob_file: path(blob_file),
        alt_dirs: alt_dirs.into_iter().map(PathBuf::from).collect(),
    }))
}

fn registry(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<BackendConfig, ConfigIssue> {
    let scheme: String = f.or("scheme", "https".to_string())?;
    let host: String = f.req("host")?;
    let repo: String = f.req("repo")?;
    let auth: Option<String> = f.opt("auth")?;
    let registry_token: Option<String> = f.opt("registry_token")?;
    let blob_url_scheme: String = f.or("blob_url_scheme", String::new())?;
    let blob_redirected_host: String = f.or("blob_redirected_host", String::new())?;
    let mirrors = take_mirrors(f, warnings)?;
    check_scheme(f, &scheme, "registry")?;
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err(ConfigIssue::new(
            f.path("host"),
            "must be the registry's host name with an optional :port, e.g. \"registry.example.com:5000\"",
        ));
    }
    let repo = repo.trim_matches('/');
    if repo.is_empty() || repo.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(ConfigIssue::new(f.path("repo"), "must be a repository name such as \"library/ubuntu\""));
    }
    if !blob_url_scheme.is_empty() && blob_url_scheme != "http" && blob_url_scheme != "https" {
        return Err(ConfigIssue::new(f.path("blob_url_scheme"), "use \"http\", \"https\" or leave it empty"));
    }
    let auth = match auth.filter(|a| !a.is_empty()) {
        Some(a) => Some((a, f.path("auth"))),
        None => std::env::var(IMAGE_PULL_AUTH)
            .ok()
            .filter(|a| !a.is_empty())
            .map(|a| (a, format!("environment variable {IMAGE_PULL_AUTH}"))),
    };
    if let Some((a, source)) = &auth {
        if !is_base64_user_pass(a) {
            // Never echo the value: it is a credential.
            return Err(ConfigIssue::new(
                source.as_str(),
                "must be base64 of `user:password` (e.g. the output of `printf %s user:password | base64 -w0`)",
            ));
        }
    }
    let http = take_http(f, warnings)?;
    Ok(BackendConfig::Registry(RegistryConfig {
        scheme,
        host,
        repo: repo.to_string(),
        auth: auth.map(|(a, _)| Secret::new(a.trim())),
        registry_token: registry_token.filter(|t| !t.is_empty()).map(Secret::new),
        blob_url_scheme,
        blob_redirected_host,
        mirrors,
        http,
    }))
}

/// `access_key_id` and `access_key_secret`: both empty is anonymous access.
fn access_key(f: &mut Fields) -> Result<Option<AccessKey>, ConfigIssue> {
    let id: String = f.or("access_key_id", String::new())?;
    let secret: String = f.or("access_key_secret", String::new())?;
    match (id.is_empty(), secret.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(AccessKey { id: Secret::new(id), secret: Secret::new(secret) })),
        (true, false) => Err(ConfigIssue::new(
            f.path("access_key_id"),
            "is empty while `access_key_secret` is set; set both, or neither for anonymous access",
        )),
        (false, true) => Err(ConfigIssue::new(
            f.path("access_key_secret"),
            "is empty while `access_key_id` is set; set both, or neither for anonymous access",
        )),
    }
}

/// An object key prefix: any text, but not starting with `/`.
fn object_prefix(f: &mut Fields) -> Result<String, ConfigIssue> {
    let prefix: String = f.or("object_prefix", String::new())?;
    if prefix.starts_with('/') || prefix.contains(['\0', '?', '#']) {
        return Err(ConfigIssue::new(
            f.path("object_prefix"),
            "must not start with `/` or contain `?`, `#` or NUL; e.g. \"nydus/\"",
        ));
    }
    Ok(prefix)
}

fn s3(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<BackendConfig, ConfigIssue> {
    let scheme: String = f.or("scheme", "https".to_string())?;
    let endpoint: String = f.or("endpoint", String::new())?;
    let region: String = f.or("region", String::new())?;
    let bucket_name: String = f.req("bucket_name")?;
    let object_prefix = object_prefix(f)?;
    let credentials = access_key(f)?;
    check_scheme(f, &scheme, "S3")?;
    let endpoint = if endpoint.is_empty() {
        if region.is_empty() {
            "s3.amazonaws.com".to_string()
        } else {
            format!("s3.{region}.amazonaws.com")
        }
    } else {
        check_host(f, "endpoint", &endpoint, "s3.us-east-1.amazonaws.com")?;
        endpoint
    };
    if region.is_empty() && credentials.is_some() {
        return Err(ConfigIssue::new(
            f.path("region"),
            "required to sign requests; set the bucket's region, e.g. \"us-east-1\"",
        ));
    }
    check_bucket(f, &bucket_name, false)?;
    let http = take_http(f, warnings)?;
    Ok(BackendConfig::S3(S3Config { scheme, endpoint, region, bucket_name, object_prefix, credentials, http }))
}

fn oss(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<BackendConfig, ConfigIssue> {
    let scheme: String = f.or("scheme", "https".to_string())?;
    let endpoint: String = f.req("endpoint")?;
    let bucket_name: String = f.req("bucket_name")?;
    let object_prefix = object_prefix(f)?;
    let credentials = access_key(f)?;
    let mirrors: Vec<Value> = f.or("mirrors", Vec::new())?;
    check_scheme(f, &scheme, "OSS")?;
    check_host(f, "endpoint", &endpoint, "oss-cn-hangzhou.aliyuncs.com")?;
    check_bucket(f, &bucket_name, true)?;
    if !mirrors.is_empty() {
        warnings.push(ConfigIssue::new(f.path("mirrors"), "mirrors are not supported for OSS; ignored"));
    }
    let http = take_http(f, warnings)?;
    Ok(BackendConfig::Oss(OssConfig { scheme, endpoint, bucket_name, object_prefix, credentials, http }))
}

/// Bucket names: 3 to 63 lowercase letters, digits, `-` (and `.` for S3).
/// OSS puts the bucket in the host name, so its rules are DNS rules.
fn check_bucket(f: &Fields, name: &str, dns_only: bool) -> Result<(), ConfigIssue> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!dns_only && c == '.');
    let ok =
        (3..=63).contains(&name.len()) && name.chars().all(ok_char) && !name.starts_with('-') && !name.ends_with('-');
    if !ok {
        let chars =
            if dns_only { "lowercase letters, digits and `-`" } else { "lowercase letters, digits, `-` and `.`" };
        return Err(ConfigIssue::new(
            f.path("bucket_name"),
            format_args!("`{name}` is not a bucket name: use 3 to 63 {chars}, not starting or ending with `-`"),
        ));
    }
    Ok(())
}

fn http_proxy(f: &mut Fields, warnings: &mut Vec<ConfigIssue>) -> Result<BackendConfig, ConfigIssue> {
    let addr: String = f.req("addr")?;
    let path: String = f.or("path", String::new())?;
    let addr_key = f.path("addr");
    let bad_addr = |why: &str| {
        ConfigIssue::new(
            addr_key.as_str(),
            format_args!(
                "{why}; use \"http://host:port\", \"https://host:port\" or the absolute path of a Unix socket"
            ),
        )
    };
    let addr = if let Some(rest) = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")) {
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(bad_addr("must be a server address without a path (put the path in `path`)"));
        }
        HttpProxyAddr::Url(addr.trim_end_matches('/').to_string())
    } else if addr.starts_with('/') {
        HttpProxyAddr::UnixSocket(PathBuf::from(addr))
    } else if addr.is_empty() {
        return Err(bad_addr("is empty"));
    } else {
        return Err(bad_addr(&format!("`{addr}` is neither an http(s) URL nor an absolute path")));
    };
    let trimmed = path.trim_matches('/');
    if trimmed.contains(['?', '#', '\0', ' ']) || trimmed.split('/').any(|p| p == "." || p == "..") {
        return Err(ConfigIssue::new(
            f.path("path"),
            "must be a URL path such as \"/namespace/repo/blobs\" (no `..`, `?`, `#` or spaces)",
        ));
    }
    let path = if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") };
    let http = take_http(f, warnings)?;
    if matches!(addr, HttpProxyAddr::UnixSocket(_)) && http.proxy.is_some() {
        warnings.push(ConfigIssue::new(f.path("proxy"), "ignored: requests to a Unix socket never go through a proxy"));
    }
    Ok(BackendConfig::HttpProxy(HttpProxyConfig { addr, path, http }))
}

/// Whether `auth` decodes to `user:password`.
fn is_base64_user_pass(a: &str) -> bool {
    decode_base64(a.trim()).and_then(|b| String::from_utf8(b).ok()).is_some_and(|t| t.contains(':'))
}

/// Standard base64 with padding; `None` if malformed. (Hand-written so
/// that the config module needs no codec crate.)
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
