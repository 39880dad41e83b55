//! Human-readable tables of the daemon's JSON answers (`--raw` prints the JSON).

use serde_json::Value;

/// Print `v` as JSON (`raw`) or through `table`.
pub fn out(raw: bool, v: &Value, table: fn(&Value)) {
    if raw {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        table(v);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `info`.
pub fn info(v: &Value) {
    let ver = &v["version"];
    println!("{:<14}{}", "id", s(&v["id"]));
    println!("{:<14}{}", "state", s(&v["state"]));
    println!("{:<14}{} ({}, {})", "version", s(&ver["package_ver"]), s(&ver["git_commit"]), s(&ver["rustc"]));
    println!("{:<14}{}", "supervisor", s(&v["supervisor"]));
    let mounts = v["mounts"].as_array().cloned().unwrap_or_default();
    println!();
    println!("{:<20} {:<10} {:<10} SOURCE", "MOUNTPOINT", "FS", "BACKEND");
    for m in mounts {
        let mp = s(&m["mountpoint"]);
        let backend = s(&v["backend_collection"][&mp]["backend_type"]);
        println!("{:<20} {:<10} {:<10} {}", mp, s(&m["fs_type"]), backend, s(&m["source"]));
    }
}

/// `build`.
pub fn build(v: &Value) {
    println!("{:<12}{}", "job", s(&v["id"]));
    println!("{:<12}{}", "state", s(&v["state"]));
    println!("{:<12}{} files, {} bytes", "progress", s(&v["progress"]["files"]), s(&v["progress"]["bytes"]));
    if let Some(r) = v.get("result") {
        println!("{:<12}{}", "bootstrap", s(&r["bootstrap"]));
        let ids = r["blobs"].as_array().cloned().unwrap_or_default();
        let sizes = r["blob_sizes"].as_array().cloned().unwrap_or_default();
        for (i, id) in ids.iter().enumerate() {
            println!("{:<12}{} ({} bytes)", "blob", s(id), sizes.get(i).map(s).unwrap_or_default());
        }
    }
    if let Some(e) = v.get("error") {
        println!("{:<12}{}", "error", s(e));
    }
}

/// Any JSON: nested objects flattened to `a.b.c  value` lines.
pub fn generic(v: &Value) {
    let mut rows = Vec::new();
    flatten("", v, &mut rows);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).min(60);
    for (k, val) in rows {
        println!("{k:<w$}  {val}");
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| flatten(&key(k), x, out)),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((prefix.to_string(), a.iter().map(s).collect::<Vec<_>>().join(" ")));
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| flatten(&key(&i.to_string()), x, out)),
        other => out.push((prefix.to_string(), s(other))),
    }
}
