//! Loading nydusd's configuration file.
//!
//! nydusd reads upstream Nydus's two formats (reference: `docs/nydusd-config.md`):
//!
//! - **v1**: JSON with `device.backend`, `device.cache`, `mode`,
//!   `fs_prefetch`, ... (upstream `RafsConfig`). A file without a top-level
//!   `version` is v1.
//! - **v2**: `version = 2` with `backend`, `cache` and `rafs` sections
//!   (upstream `ConfigV2`), written in TOML or JSON.
//!
//! The format is detected from the text (JSON if it parses as JSON, else
//! TOML), the version from the top-level `version` key. Loading runs in two
//! phases: the text becomes section structs that mirror upstream's key names
//! (`v1`, `v2`, `sections`), which are then validated and resolved into the
//! typed settings of the storage and fs crates ([`DaemonConfig`]).
//!
//! Unknown keys are warnings, not errors: upstream ignores them silently,
//! and upstream's own sample files carry keys it no longer reads. The caller
//! logs the warnings. Everything else that cannot be honoured (a remote
//! backend, fscache, cache encryption, an overlay) is an error naming the
//! file and key, so a daemon never starts with settings it would ignore.

mod error;
mod parse;
mod sections;
mod v1;
mod v2;

use std::path::Path;

use nydus_fs::config::FsConfig;
use nydus_storage::config::{BackendConfig, CacheConfig, CacheKind, LocalFsConfig};
use serde_json::Value;

pub use error::ConfigError;
use parse::Ctx;

/// Upstream refuses configuration files larger than this.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// Everything a configuration file says, resolved into the settings of the
/// crates that act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Instance id (v1 `device.id`, v2 `id`); `None` when absent or empty.
    pub id: Option<String>,
    /// Where blobs come from.
    pub backend: BackendConfig,
    /// The blob cache.
    pub cache: CacheConfig,
    /// The RAFS filesystem, including prefetch.
    pub fs: FsConfig,
}

/// Reads and resolves the configuration file at `path` (`nydusd --config`).
/// Returns the configuration and warnings (unknown or ignored keys, each a
/// complete line naming the file and key) for the caller to log.
pub fn load_file(path: &Path) -> Result<(DaemonConfig, Vec<String>), ConfigError> {
    let file = path.display().to_string();
    let read_error = |source| ConfigError::Read { file: file.clone(), source };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_FILE_SIZE {
        return Err(ConfigError::TooLarge { file, size });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    parse_str(&text, &file)
}

/// Resolves configuration text (e.g. the body of a mount request); `origin`
/// names it in messages.
pub fn parse_str(text: &str, origin: &str) -> Result<(DaemonConfig, Vec<String>), ConfigError> {
    let mut ctx = Ctx::new(origin);
    // Some editors on Windows start files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut doc = parse_tree(text, &ctx)?;
    let Some(top) = doc.as_object_mut() else {
        return Err(ctx.invalid("", "expected an object of configuration keys; see docs/nydusd-config.md"));
    };
    let version = match top.remove("version") {
        None if ["backend", "cache", "rafs"].iter().any(|k| top.contains_key(*k)) && !top.contains_key("device") => {
            return Err(ctx.invalid(
                "version",
                "missing: the file has v2 sections (`backend`, `cache`, `rafs`); add `version = 2` at the top",
            ));
        }
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n @ (1 | 2)) => n as u32,
            _ => return Err(ConfigError::Version { file: ctx.file.clone(), found: v.to_string() }),
        },
    };
    ctx.version = version;
    let config = if version == 2 { v2::load(&mut ctx, doc)? } else { v1::load(&mut ctx, doc)? };
    // By key: the tree keeps no document order, and sections are read in
    // two passes.
    let mut warnings = ctx.warnings;
    warnings.sort();
    Ok((config, warnings))
}

/// The configuration `nydusd -D DIR` (`--localfs-dir`) stands for, as
/// upstream: blobs are read from DIR by the localfs backend and cached in
/// DIR too (cache files are `<blob id>.blob.data` and `<blob id>.chunk_map`,
/// so they never collide with the blobs), in direct mode without digest
/// validation.
pub fn localfs_dir_config(dir: &Path) -> DaemonConfig {
    let localfs = LocalFsConfig { dir: Some(dir.to_path_buf()), ..Default::default() };
    let cache = CacheConfig {
        kind: CacheKind::Blobcache,
        work_dir: dir.to_path_buf(),
        digest_validate: false,
        ..Default::default()
    };
    let fs =
        FsConfig { mode: "direct".to_string(), digest_validate: false, iostats_files: false, ..Default::default() };
    DaemonConfig { id: None, backend: BackendConfig::LocalFs(localfs), cache, fs }
}

/// Parses the text as JSON, else as TOML, into one value tree. When both
/// fail, reports the error of the format the text looks like.
fn parse_tree(text: &str, ctx: &Ctx) -> Result<Value, ConfigError> {
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let toml_error = match toml::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let syntax = |format, (line, column), message: String| ConfigError::Syntax {
        file: ctx.file.clone(),
        format,
        line,
        column,
        message,
    };
    if text.trim_start().starts_with(['{', '[']) {
        let message = json_error.to_string();
        let suffix = format!(" at line {} column {}", json_error.line(), json_error.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_string();
        return Err(syntax("JSON", (json_error.line(), json_error.column()), message));
    }
    let at = toml_error.span().map_or((1, 1), |span| line_column(text, span.start));
    Err(syntax("TOML", at, toml_error.message().to_string()))
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod kernel_cache_tests;
#[cfg(test)]
mod tests;
