//! `entry_timeout`, `attr_timeout`, `keep_cache`, `passthrough`, `passthrough_min_size`
//! and `io_uring` in v1 and v2 files.

use std::time::Duration;

use super::parse_str;

const FILE: &str = "/etc/nydus/c.json";

const V1_BASE: &str = r#""device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}, "mode": "direct""#;

fn v1(extra: &str) -> String {
    format!("{{{V1_BASE}{extra}}}")
}

fn v2(extra: &str) -> String {
    format!("version = 2\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = \"/b\"\n[rafs]\n{extra}\n")
}

#[test]
fn defaults_let_the_kernel_cache_for_a_day() {
    for text in [v1(""), v2("")] {
        let (c, warnings) = parse_str(&text, FILE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.fs.entry_timeout, Duration::from_secs(86400));
        assert_eq!(c.fs.attr_timeout, Duration::from_secs(86400));
        assert!(c.fs.keep_cache);
        assert!(!c.fs.passthrough);
        assert_eq!(c.fs.passthrough_min_size, 16 << 20);
        assert!(c.fs.io_uring);
    }
}

#[test]
fn v1_and_v2_turn_io_uring_off() {
    for text in [v1(r#", "io_uring": false"#), v2("io_uring = false")] {
        let (c, warnings) = parse_str(&text, FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!c.fs.io_uring);
    }
    let err = parse_str(&v2("io_uring = \"yes\""), FILE).unwrap_err().to_string();
    assert!(err.contains("rafs.io_uring"), "{err}");
}

#[test]
fn v1_and_v2_set_passthrough() {
    let texts = [
        v1(r#", "passthrough": true, "passthrough_min_size": 1048576"#),
        v2("passthrough = true\npassthrough_min_size = 1048576"),
    ];
    for text in texts {
        let (c, warnings) = parse_str(&text, FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.fs.passthrough);
        assert_eq!(c.fs.passthrough_min_size, 1 << 20);
    }
}

#[test]
fn v1_and_v2_set_all_three() {
    let texts = [
        v1(r#", "entry_timeout": 2.5, "attr_timeout": 0, "keep_cache": false"#),
        v2("entry_timeout = 2.5\nattr_timeout = 0\nkeep_cache = false"),
    ];
    for text in texts {
        let (c, warnings) = parse_str(&text, FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.fs.entry_timeout, Duration::from_millis(2500));
        assert_eq!(c.fs.attr_timeout, Duration::ZERO);
        assert!(!c.fs.keep_cache);
    }
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        (v1(r#", "entry_timeout": -1"#), "entry_timeout: -1 is not a number of seconds"),
        (v2("attr_timeout = 1e12"), "rafs.attr_timeout: 1000000000000 is not a number of seconds"),
        (v1(r#", "keep_cache": "yes""#), "keep_cache: invalid type: string"),
        (v2("entry_timeout = \"1s\""), "rafs.entry_timeout: invalid type: string"),
        (v1(r#", "passthrough_min_size": 0"#), "passthrough_min_size: must be at least 1 byte"),
        (v2("passthrough_min_size = 0"), "rafs.passthrough_min_size: must be at least 1 byte"),
        (v2("passthrough = 1"), "rafs.passthrough: invalid type: integer"),
    ];
    for (text, want) in cases {
        let e = parse_str(&text, FILE).expect_err(&text).to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
}
