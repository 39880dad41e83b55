//! Parse arbitrary bytes as a bootstrap and read everything reachable:
//! walk, inodes, xattrs, directories, symlinks, chunks, chunk records,
//! prefetch table, path lookups.
#![no_main]

#[path = "../../../format/tests/support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    support::traverse::traverse(data);
});
