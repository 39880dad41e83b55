//! `create --backend-type T --backend-config JSON`: put the finished blob
//! into a backend.
//!
//! The settings are resolved and the uploader built before the build starts,
//! so a bad configuration fails fast; no request is sent until the build is
//! done. A blob the backend already has is not sent again.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nydus_storage::backend::upload::{new_uploader, BlobUploader};
use nydus_storage::config::backend_from_json;

use crate::cli::{BackendTypeArg, UploadArgs};
use crate::progress;

/// A resolved upload target.
pub struct Target {
    kind: BackendTypeArg,
    uploader: Box<dyn BlobUploader>,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent to the backend.
    Uploaded,
    /// The backend had it already.
    Present,
}

/// The backend settings given on the command line, as JSON text.
fn config_text(a: &UploadArgs) -> Result<String> {
    match (&a.backend_config, &a.backend_config_file) {
        (Some(s), None) => Ok(s.clone()),
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read --backend-config-file {}", p.display()))
        }
        (None, None) => bail!(
            "--backend-type needs the backend's settings: pass --backend-config JSON or --backend-config-file FILE"
        ),
        (Some(_), Some(_)) => bail!("pass either --backend-config or --backend-config-file, not both"),
    }
}

/// Resolve the upload flags (`None` when no upload was asked for).
pub fn target(a: &UploadArgs) -> Result<Option<Target>> {
    let Some(kind) = a.backend_type else {
        return Ok(None);
    };
    let text = config_text(a)?;
    // serde_json's message gives line and column, never the content (which
    // may hold credentials).
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the {} backend settings are not valid JSON: {e}", kind.name()))?;
    let (cfg, warnings) = backend_from_json(kind.name(), &json)?;
    for w in warnings {
        tracing::warn!("backend config: {w}");
    }
    let uploader = new_uploader(&cfg).with_context(|| format!("cannot upload to the {} backend", kind.name()))?;
    Ok(Some(Target { kind, uploader }))
}

impl Target {
    /// The backend type, for messages.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Upload the blob file at `path` as `blob_id` unless the backend has it.
    pub fn upload(&self, blob_id: &str, path: &Path) -> Result<Outcome> {
        // Storage errors name the blob already.
        let fail = || format!("upload to the {} backend failed", self.name());
        if self.uploader.blob_exists(blob_id).with_context(fail)? {
            tracing::info!(blob_id, backend = self.name(), "the backend already has the blob; not uploading it");
            return Ok(Outcome::Present);
        }
        let file = File::open(path).with_context(|| format!("cannot open blob {}", path.display()))?;
        let size = file.metadata().with_context(|| format!("cannot stat blob {}", path.display()))?.len();
        let short = &blob_id[..blob_id.len().min(12)];
        let bar = progress::Bar::bytes(&format!("uploading {short}"));
        let res = self.uploader.upload(blob_id, &file, size, &|done| bar.update(done, size, 0));
        bar.finish();
        res.with_context(fail)?;
        tracing::info!(blob_id, backend = self.name(), bytes = size, "blob uploaded");
        Ok(Outcome::Uploaded)
    }
}
