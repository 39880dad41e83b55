//! Reading one configuration section out of a JSON value tree, key by key.
//!
//! A [`Fields`] takes the keys a section knows out of its object one at a
//! time; whatever is left at the end is reported as unknown. Every error and
//! warning carries the full key path (`device.backend.config.proxy.url`), so
//! callers can point at the offending line without knowing the schema. This
//! keeps the storage crate on serde + serde_json alone.

use serde::de::{DeserializeOwned, Error as _, Unexpected};
use serde_json::{Map, Value};

use super::ConfigIssue;

/// Appended to messages about values the reader cannot use.
const DOC_HINT: &str = "see docs/nydusd-config.md";

/// `a` + `.b`, or `a` + `[0]`; either side may be empty.
pub(crate) fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// The keys of one section still to be read.
pub(crate) struct Fields {
    /// Key path of the section itself ("" at the top).
    key: String,
    map: Map<String, Value>,
}

impl Fields {
    /// Opens `value` (an object) as the section at `key`; `expecting`
    /// describes the section for the type error when it is not an object.
    pub(crate) fn new(value: Value, key: &str, expecting: &str) -> Result<Self, ConfigIssue> {
        match value {
            Value::Object(map) => Ok(Self { key: key.to_string(), map }),
            other => {
                let e = serde_json::Error::invalid_type(unexpected(&other), &expecting);
                Err(type_error(key, &e))
            }
        }
    }

    /// The full key path of `name` in this section.
    pub(crate) fn path(&self, name: &str) -> String {
        join(&self.key, name)
    }

    /// Takes `name`; `None` when absent (an explicit `null` too).
    pub(crate) fn opt<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ConfigIssue> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if is_secret_key(name) => serde_json::from_value(v).map(Some).map_err(|_| {
                ConfigIssue::new(self.path(name), format_args!("must be a string (value not shown: it is a secret)"))
            }),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| type_error(&self.path(name), &e)),
        }
    }

    /// Takes `name`, or `default` when absent.
    pub(crate) fn or<T: DeserializeOwned>(&mut self, name: &str, default: T) -> Result<T, ConfigIssue> {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// Takes `name`, which must be present.
    pub(crate) fn req<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, ConfigIssue> {
        self.opt(name)?.ok_or_else(|| {
            ConfigIssue::new(self.path(name), format_args!("required key is missing; add it ({DOC_HINT})"))
        })
    }

    /// Takes a list of strings; a bad element is named by its index.
    pub(crate) fn strings(&mut self, name: &str) -> Result<Vec<String>, ConfigIssue> {
        let key = self.path(name);
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| serde_json::from_value(v).map_err(|e| type_error(&format!("{key}[{i}]"), &e)))
                .collect(),
            Some(other) => {
                Err(type_error(&key, &serde_json::Error::invalid_type(unexpected(&other), &"a list of strings")))
            }
        }
    }

    /// Takes `name` as a nested section (`None` when absent).
    pub(crate) fn section(&mut self, name: &str, expecting: &str) -> Result<Option<Fields>, ConfigIssue> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Fields::new(v, &self.path(name), expecting).map(Some),
        }
    }

    /// Reports every key not taken as an unknown-key warning.
    pub(crate) fn finish(self, warnings: &mut Vec<ConfigIssue>) {
        for name in self.map.keys() {
            warnings.push(ConfigIssue::new(
                self.path(name),
                "unknown key, ignored; check its spelling and place against docs/nydusd-config.md",
            ));
        }
    }
}

/// Keys whose values are credentials: their values never appear in messages.
fn is_secret_key(name: &str) -> bool {
    matches!(name, "auth" | "registry_token" | "access_key_id" | "access_key_secret" | "password" | "token")
}

/// The issue for a value of the wrong type or out of range.
fn type_error(key: &str, e: &serde_json::Error) -> ConfigIssue {
    ConfigIssue::new(key, format_args!("{e}; fix the value ({DOC_HINT})"))
}

/// How serde names a JSON value in "invalid type" messages.
fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_values_are_never_echoed() {
        for (k, v) in [("auth", json!(12345678901u64)), ("access_key_secret", json!(["s3cr3t"]))] {
            let mut f = Fields::new(json!({ k: v.clone() }), "top", "x").unwrap();
            let e = f.opt::<String>(k).unwrap_err().to_string();
            assert!(e.contains("value not shown") && !e.contains("12345678901") && !e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn keys_errors_and_leftovers_carry_paths() {
        let v = json!({"a": 1, "b": "x", "list": ["p", 3], "sub": {"k": true, "extra": 0}, "odd": 2});
        let mut f = Fields::new(v, "top", "a section").unwrap();
        assert_eq!(f.req::<u8>("a").unwrap(), 1);
        assert_eq!(f.or("missing", 7u32).unwrap(), 7);
        let e = f.req::<String>("nope").unwrap_err();
        assert_eq!(e.to_string(), "top.nope: required key is missing; add it (see docs/nydusd-config.md)");
        let e = f.opt::<u64>("b").unwrap_err();
        assert!(e.to_string().starts_with("top.b: invalid type: string \"x\", expected u64; fix the value"), "{e}");
        let e = f.strings("list").unwrap_err();
        assert!(e.to_string().starts_with("top.list[1]: invalid type: integer `3`, expected a string"), "{e}");
        let mut sub = f.section("sub", "a sub-section").unwrap().unwrap();
        assert!(sub.req::<bool>("k").unwrap());
        let mut warnings = Vec::new();
        sub.finish(&mut warnings);
        f.finish(&mut warnings);
        let keys: Vec<_> = warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["top.sub.extra", "top.odd"]);
        let e = Fields::new(json!("str"), "s", "a section of things").err().unwrap();
        assert!(e.to_string().starts_with("s: invalid type: string \"str\", expected a section of things"), "{e}");
    }
}
