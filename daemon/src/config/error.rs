//! Why a configuration file was refused.
//!
//! Every message starts with the file and, where one applies, the key path
//! (`device.cache.config.work_dir`), and ends with what to do about it, so the
//! operator can fix the file without reading our source.

use std::io;

/// A configuration file that cannot be used. Unknown keys are not errors:
/// they are returned as warnings next to the loaded configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error("{file}: cannot read the configuration file: {source}; check the path and its permissions")]
    Read {
        /// The file, as given.
        file: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is larger than any plausible configuration (upstream's limit).
    #[error("{file}: the file has {size} bytes, more than the 1 MiB a configuration file may have; check that --config names the configuration file")]
    TooLarge {
        /// The file, as given.
        file: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The text is neither valid JSON nor valid TOML.
    #[error("{file}:{line}:{column}: not valid {format}: {message}; fix the syntax (a file starting with `{{` is read as JSON, anything else as TOML)")]
    Syntax {
        /// The file, as given.
        file: String,
        /// "JSON" or "TOML": the format the text looked like.
        format: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A top-level `version` other than 2 (v2) or 1 / absent (v1).
    #[error("{file}: version: configuration format version {found} is not supported; write `version = 2` for the v2 format, or leave `version` out for the v1 JSON format")]
    Version {
        /// The file, as given.
        file: String,
        /// The value found, as written (JSON syntax).
        found: String,
    },
    /// A key has the wrong type, is missing, or has a value out of range.
    /// `message` says what is wrong and what to write instead.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file, as given.
        file: String,
        /// Dotted key path, e.g. `device.cache.config.work_dir`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// An upstream feature this nydusd does not have (fscache, overlay,
    /// cache encryption). `hint` says what to use instead.
    #[error("{file}: {key}: {feature} is not supported; {hint}")]
    Unsupported {
        /// The file, as given.
        file: String,
        /// Key path that asked for the feature.
        key: String,
        /// The feature, e.g. "cache type `fscache`".
        feature: String,
        /// What to do instead.
        hint: String,
    },
}
