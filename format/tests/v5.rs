//! RAFS v5 bootstraps written by upstream's nydus-image read as the same tree.

use std::path::PathBuf;

use nydus_format::v5;

mod support;

fn fixture(compressor: &str) -> Vec<u8> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rafs-v5").join(compressor).join("bootstrap");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn upstream_v5_images_convert_and_walk() {
    for c in ["lz4_block", "zstd"] {
        let boot = v5::load(fixture(c)).unwrap_or_else(|e| panic!("{c}: {e}"));
        let root = boot.inode(boot.sb.root_nid).unwrap();
        let hello = boot.lookup_path("/hello.txt").unwrap().expect("hello.txt");
        let hard = boot.lookup_path("/dir/hard2").unwrap().expect("dir/hard2");
        assert_eq!(hello.nid, hard.nid, "{c}: hard links share an inode");
        assert_eq!(hello.nlink, 3, "{c}");
        assert_eq!(hello.size, 9);
        let xattrs = boot.xattrs(&hello).unwrap();
        assert!(xattrs.iter().any(|(k, v)| k == b"user.color" && v == b"blue"), "{c}: {xattrs:?}");
        let big = boot.lookup_path("/dir/big.bin").unwrap().expect("big.bin");
        assert_eq!(big.size, 150_000);
        assert_eq!(boot.chunks(&big).unwrap().len(), 3);
        let link = boot.lookup_path("/link").unwrap().expect("link");
        assert_eq!(boot.readlink(&link).unwrap(), b"hello.txt");
        assert!(root.is_dir());
        assert_eq!(boot.blobs.len(), 1);
        assert_eq!(boot.blobs[0].ci_uncompressed_size, 0, "v5 blobs have no ci array");
    }
}

#[test]
fn damaged_v5_bootstraps_are_errors_not_panics() {
    let good = fixture("zstd");
    // Every 8-byte-aligned word set to all ones, and truncations: never a panic.
    // What loads reads back without errors (as the fuzz target checks).
    for at in (0..good.len()).step_by(8) {
        let mut d = good.clone();
        d[at..at + 8].copy_from_slice(&[0xff; 8]);
        if let Ok(boot) = v5::load(d) {
            let o = support::traverse::traverse(boot.bytes());
            assert!(o.parsed && o.errors == 0, "word at {at:#x}: {o:?}");
        }
    }
    for len in (0..good.len()).step_by(97) {
        let mut d = good[..len].to_vec();
        d.truncate(len & !7);
        assert!(v5::load(d).is_err() || len >= good.len() - 8);
    }
}

/// Fuzzer finds (`tests/fuzz`, target `v5`): v5 images the converter used to
/// accept although the v6 image it wrote does not read back cleanly.
#[test]
fn v5_regressions() {
    let good = fixture("zstd");
    let u32_at = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    // The second chunk record of `/dir/sub/text.txt`, at 0x28f0 (compressed
    // size at +40, uncompressed size at +44).
    let rec = 0x28f0;
    assert_eq!((u32_at(&good, rec + 40), u32_at(&good, rec + 44)), (36, 0x10000), "fixture layout");
    // An uncompressed size above the chunk size (0xfb00_0000), zero sizes.
    for (at, v) in [(rec + 44, 0xfb00_0000u32), (rec + 44, 0x1_0001), (rec + 44, 0), (rec + 40, 0)] {
        let mut d = good.clone();
        put(&mut d, at, v);
        let e = v5::load(d).err().unwrap_or_else(|| panic!("{v:#x} at {at:#x} accepted"));
        assert!(e.to_string().contains("chunk sizes"), "{e}");
    }
    // The mode of `/blk` (record at 0x2150, mode at +60): no file type bits
    // (the v6 reader then fails on the inode), or bits above the 16 of v6.
    let mode = 0x2150 + 60;
    assert_eq!(u32_at(&good, mode), 0o060644, "fixture layout");
    for v in [0o004400u32, 0o170644, 0o1_060644] {
        let mut d = good.clone();
        put(&mut d, mode, v);
        let e = v5::load(d).err().unwrap_or_else(|| panic!("mode {v:o} accepted"));
        assert!(e.to_string().contains("not a file type"), "{e}");
    }
    // `/dir/sub` (record at 0x2618): mtime nanoseconds (at +108) of a whole
    // second, and the name (size at +100, bytes at +128) "." or "..".
    let sub = 0x2618;
    assert_eq!(&good[sub + 128..sub + 132], b"sub\0", "fixture layout");
    for v in [1_000_000_000, 3_297_512_148] {
        let mut d = good.clone();
        put(&mut d, sub + 108, v);
        let e = v5::load(d).err().expect("nanoseconds accepted");
        assert!(e.to_string().contains("nanoseconds"), "{e}");
    }
    for name in [&b"."[..], b".."] {
        let mut d = good.clone();
        d[sub + 100..sub + 102].copy_from_slice(&(name.len() as u16).to_le_bytes());
        d[sub + 128..sub + 131].fill(0);
        d[sub + 128..sub + 128 + name.len()].copy_from_slice(name);
        let e = v5::load(d).err().expect("'.' or '..' accepted");
        assert!(e.to_string().contains("name '.' or '..'"), "{e}");
    }
}

fn put(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Bounds on the work done for hostile tables (found reading the decoder):
/// table entries sharing records, directories claiming every inode, a blob
/// claiming 2^24 chunks no file uses.
#[test]
fn v5_work_is_bounded() {
    let good = fixture("zstd");
    // Inode table at 0x2000, 16 entries; the record of `/dir/sub/text.txt` is at 0x2818.
    let mut d = good.clone();
    for i in 0..16 {
        put(&mut d, 0x2000 + 4 * i, 0x2818 >> 3);
    }
    let e = v5::load(d).err().expect("shared records accepted");
    assert!(e.to_string().contains("overlap"), "{e}");
    // `/dir` (inode 4, record at 0x2260) claims inodes 5..=16, which the root lists too.
    let mut d = good.clone();
    put(&mut d, 0x2260 + 92, 5);
    put(&mut d, 0x2260 + 96, 12);
    let e = v5::load(d).err().expect("children listed twice accepted");
    assert!(e.to_string().contains("list more than"), "{e}");
    // The extended blob table (at 0x2088) gives the blob's chunk count.
    for (count, ok) in [(0x100_0000u32, true), (0x100_0001, false)] {
        let mut d = good.clone();
        put(&mut d, 0x2088, count);
        match v5::load(d) {
            Ok(boot) => {
                assert!(ok, "{count:#x} chunks accepted");
                assert_eq!(boot.blobs[0].chunk_count, count);
            }
            Err(e) => assert!(!ok, "{count:#x}: {e}"),
        }
    }
}
