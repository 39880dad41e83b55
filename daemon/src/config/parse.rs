//! Typed parsing of one configuration section, with key paths.
//!
//! Every section is deserialized from a [`serde_json::Value`] tree (TOML is
//! converted to the same tree) through two wrappers: `serde_path_to_error`
//! names the key behind a type error, and `serde_ignored` reports keys no
//! struct field takes. The section structs mirror upstream's key names; they
//! are resolved into the storage and fs settings by `sections`, `v1` and `v2`.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::ConfigError;

/// Where the text came from, and the warnings gathered while reading it.
pub(super) struct Ctx {
    /// The file name used in messages.
    pub(super) file: String,
    /// One line per warning, already prefixed with the file and key.
    pub(super) warnings: Vec<String>,
    /// Hints for unknown keys, by format version (see [`unknown_key_hint`]).
    pub(super) version: u32,
}

impl Ctx {
    pub(super) fn new(file: &str) -> Self {
        Self { file: file.to_string(), warnings: Vec::new(), version: 1 }
    }

    /// Records a warning about `key`.
    pub(super) fn warn(&mut self, key: &str, message: impl fmt::Display) {
        self.warnings.push(format!("{}: {}: {}", self.file, key, message));
    }

    /// An [`ConfigError::Invalid`] for `key`.
    pub(super) fn invalid(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        let key = if key.is_empty() { "<top level>" } else { key };
        ConfigError::Invalid { file: self.file.clone(), key: key.to_string(), message: message.to_string() }
    }

    /// An [`ConfigError::Unsupported`] for `key`.
    pub(super) fn unsupported(&self, key: &str, feature: impl fmt::Display, hint: &str) -> ConfigError {
        ConfigError::Unsupported {
            file: self.file.clone(),
            key: key.to_string(),
            feature: feature.to_string(),
            hint: hint.to_string(),
        }
    }

    /// Deserializes the section at `prefix` (e.g. `device.backend.config`;
    /// empty for the whole file). Unknown keys become warnings; a type
    /// error or a missing required key becomes [`ConfigError::Invalid`].
    pub(super) fn section<T: DeserializeOwned>(&mut self, value: Value, prefix: &str) -> Result<T, ConfigError> {
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path| unknown.push(ignored_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
        match parsed {
            Ok(v) => {
                for key in unknown {
                    let key = join(prefix, &key);
                    let hint = unknown_key_hint(self.version, &key);
                    self.warn(&key, format_args!("unknown key, ignored; {hint}"));
                }
                Ok(v)
            }
            Err(e) => Err(self.type_error(prefix, &e)),
        }
    }

    fn type_error(&self, prefix: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
        let key = join(prefix, &error_path(e.path()));
        let message = e.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            let key = join(&key, field);
            return self.invalid(&key, "required key is missing; add it (see docs/nydusd-config.md)");
        }
        self.invalid(&key, format_args!("{message}; fix the value (see docs/nydusd-config.md)"))
    }
}

/// `a` + `.b`, or `a` + `[0]`; either side may be empty.
pub(super) fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// Renders a `serde_ignored` path as `a.b[0].c` (its own `Display` adds
/// `?` for every `Option` on the way).
fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => join_nonempty(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter().fold(String::new(), |acc, seg| match seg {
        Segment::Seq { index } => format!("{acc}[{index}]"),
        Segment::Map { key } => join_nonempty(&acc, key),
        Segment::Enum { variant } => join_nonempty(&acc, variant),
        Segment::Unknown => join_nonempty(&acc, "?"),
    })
}

fn join_nonempty(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Where a misplaced key probably belongs: mostly v1 names in v2 files and
/// the other way round.
fn unknown_key_hint(version: u32, key: &str) -> String {
    let hint = match (version, key) {
        (1, "backend" | "cache" | "rafs") => "this is a v2 section: add `\"version\": 2` and move every setting to its v2 place",
        (1, "device.cache.config.compressed") => "`compressed` belongs in `device.cache`",
        (2, "device") => "`device` is a v1 section: use `backend` and `cache`, or remove `version` for the v1 format",
        (2, "mode" | "digest_validate" | "enable_xattr" | "iostats_files" | "amplify_io" | "fs_prefetch") => {
            "this is a v1 key: v2 keeps filesystem settings under `rafs` (`rafs.mode`, `rafs.validate`, `rafs.batch_size`, `rafs.prefetch`, ...)"
        }
        (2, "backend.config") => "v2 puts backend settings under `backend.<type>`, e.g. `backend.localfs`",
        (2, "cache.config" | "cache.work_dir") => "v2 puts cache settings under `cache.filecache`, e.g. `cache.filecache.work_dir`",
        (2, "rafs.user_io_batch_size" | "rafs.amplify_io") => "the v2 key is `rafs.batch_size`",
        (2, "rafs.digest_validate") => "the v2 key is `rafs.validate`",
        _ => "check its spelling and place against docs/nydusd-config.md",
    };
    hint.to_string()
}

/// A byte count: an integer, or a string such as `"10GiB"`, `"512 MiB"`,
/// `"2G"` (binary units: K, M, G, T, KiB, ... are powers of 1024; KB, MB,
/// GB, TB are powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteSize(pub(super) u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size in bytes, such as 10737418240 or \"10GiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        parse_byte_size(v).map(ByteSize).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Parses `"<digits>[ ]<unit>"`; `None` for anything else or on overflow.
pub(super) fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}
