//! RAFS v5 bootstraps written by upstream's nydus-image read as the same tree.

use std::path::PathBuf;

use nydus_format::v5;

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
    for at in (0..good.len()).step_by(8) {
        let mut d = good.clone();
        d[at..at + 8].copy_from_slice(&[0xff; 8]);
        let _ = v5::load(d);
    }
    for len in (0..good.len()).step_by(97) {
        let mut d = good[..len].to_vec();
        d.truncate(len & !7);
        assert!(v5::load(d).is_err() || len >= good.len() - 8);
    }
}
