//! Request and response bodies (upstream's JSON field names) and the response type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST/PUT /api/v1/mount?mountpoint=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountCmd {
    /// The bootstrap file of the image.
    pub source: String,
    /// Filesystem type; only `rafs`.
    #[serde(default = "rafs")]
    pub fs_type: String,
    /// The daemon configuration (upstream v1 or v2, JSON or TOML) as a string.
    pub config: String,
    /// Paths to prefetch after mounting.
    #[serde(default)]
    pub prefetch_files: Option<Vec<String>>,
}

fn rafs() -> String {
    "rafs".into()
}

/// Body of `PUT /api/v1/daemon` and `PUT /api/v1/config`: settings changed at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConf {
    /// New log level: trace, debug, info, warn or error.
    pub log_level: String,
}

/// Body of `POST /api/v1/build`: build an image from a directory, in the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// Source directory.
    pub source: String,
    /// Source type: `directory` (default), `tar-rafs`, `targz-rafs`,
    /// `estargz-rafs` or `estargztoc-ref`.
    #[serde(default = "directory")]
    pub source_type: String,
    /// Where to write the bootstrap.
    pub bootstrap: String,
    /// Directory for the blob (named by its digest).
    pub blob_dir: String,
    /// Compressor: `none`, `lz4_block` or `zstd` (default `zstd`).
    #[serde(default)]
    pub compressor: Option<String>,
    /// Chunk size, e.g. `0x100000` or `1048576` (default 1 MiB).
    #[serde(default)]
    pub chunk_size: Option<Value>,
    /// Bootstrap of a parent image (layered builds).
    #[serde(default)]
    pub parent_bootstrap: Option<String>,
    /// Chunk dictionary bootstrap for deduplication.
    #[serde(default)]
    pub chunk_dict: Option<String>,
    /// Reproducible output (fixed times, sorted walk).
    #[serde(default)]
    pub repeatable: bool,
    /// The blob's id (`--blob-id`): for `estargztoc-ref`, the layer
    /// digest's hex part.
    #[serde(default)]
    pub blob_id: Option<String>,
    /// Size of the eStargz blob for `estargztoc-ref` from a TOC
    /// (`--blob-data-size`): a number, or a hex string as on the CLI.
    #[serde(default)]
    pub blob_data_size: Option<Value>,
}

fn directory() -> String {
    "directory".into()
}

/// Error body: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// A stable identifier (`BadRequest`, `NotFound`, ...).
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
}

/// A response body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body (204).
    Empty,
    /// A JSON document.
    Json(Value),
    /// Text with its content type (the Prometheus exposition format).
    Text {
        /// `Content-Type` header value.
        content_type: &'static str,
        /// The text.
        text: String,
    },
}

/// A response: HTTP status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body.
    pub body: Body,
}

impl ApiResponse {
    /// 200 with a JSON body.
    pub fn json(v: Value) -> Self {
        Self { status: 200, body: Body::Json(v) }
    }

    /// 204, no body.
    pub fn no_content() -> Self {
        Self { status: 204, body: Body::Empty }
    }

    /// An error: `status` with `{"code", "message"}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        let code = match status {
            400 => "BadRequest",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            408 => "RequestTimeout",
            409 => "Conflict",
            413 => "PayloadTooLarge",
            415 => "UnsupportedMediaType",
            501 => "NotImplemented",
            503 => "Unavailable",
            _ => "InternalError",
        };
        let body = ErrorMessage { code: code.into(), message: message.into() };
        Self { status, body: Body::Json(serde_json::to_value(body).unwrap_or(Value::Null)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_cmd_accepts_upstream_bodies_and_rejects_unknown_fields() {
        let m: MountCmd = serde_json::from_str(r#"{"source":"/b","fs_type":"rafs","config":"{}"}"#).unwrap();
        assert_eq!(m.prefetch_files, None);
        let m: MountCmd = serde_json::from_str(r#"{"source":"/b","config":"{}","prefetch_files":["/a"]}"#).unwrap();
        assert_eq!(m.fs_type, "rafs");
        assert_eq!(m.prefetch_files.as_deref(), Some(&["/a".to_string()][..]));
        assert!(serde_json::from_str::<MountCmd>(r#"{"source":"/b","config":"{}","x":1}"#).is_err());
        assert!(serde_json::from_str::<MountCmd>(r#"{"source":1,"config":"{}"}"#).is_err());
    }

    #[test]
    fn error_body_has_code_and_message() {
        let r = ApiResponse::error(404, "no mount at /x");
        assert_eq!(r.status, 404);
        let Body::Json(v) = r.body else { panic!() };
        assert_eq!(v["code"], "NotFound");
        assert_eq!(v["message"], "no mount at /x");
    }
}
