//! Random-mutation robustness of the decoders: valid images written by the
//! writer are damaged (bit flips, boundary values in fields, truncation,
//! copied and zeroed ranges) and then read through every reader entry point.
//! Errors are expected; panics, hangs and huge allocations are bugs.
//!
//! Everything is deterministic: a failing case prints its seed and saves the
//! input under the system temp directory.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nydus_format::blob_meta::{decode_trailer, encode_trailer, ChunkLocation, CiDescriptor};
use nydus_format::ondisk::BLOCK_SIZE;
use nydus_format::reader::Bootstrap;
use nydus_format::writer::write_bootstrap;
use nydus_format::{dir, xattr, Compressor};
use support::traverse::traverse;
use support::tree::{sample_images, Tree};

/// splitmix64: tiny, deterministic, good enough for picking mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Byte ranges of a valid image where structures live: superblocks, device
/// slots, tables, inodes (with xattrs and inline data), directory blocks.
fn hot_regions(bytes: &[u8]) -> Vec<(u64, u64)> {
    let boot = Bootstrap::parse(bytes).expect("sample parses");
    let nblobs = boot.blobs.len() as u64;
    let mut hot = vec![(1024, 384 + 128 * nblobs)];
    let (ct, pt) = (boot.sb.chunk_table, boot.sb.prefetch_table);
    hot.push((ct.0, ct.1.min(4 * 80)));
    hot.push((pt.0, pt.1 as u64));
    if nblobs > 0 {
        // The blob table starts at the first block boundary after the slots.
        let bt = (1408 + 128 * nblobs).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        hot.push((bt, 256 * nblobs.min(2)));
    }
    boot.walk(|_, _, ino| {
        let len = ino.inode_size() + ino.xattr_size;
        let inline = if ino.is_dir() || ino.is_symlink() { ino.size % BLOCK_SIZE } else { 16 };
        hot.push((ino.offset, (len + inline).min(BLOCK_SIZE)));
        if (ino.is_dir() || ino.is_symlink()) && ino.size >= BLOCK_SIZE {
            hot.push((ino.i_u as u64 * BLOCK_SIZE, 256));
        }
        Ok(())
    })
    .expect("sample walks");
    hot.retain(|&(off, len)| len > 0 && off + len <= bytes.len() as u64);
    hot
}

fn interesting_values(len: u64) -> Vec<u64> {
    let mut v = vec![0, 1, 2, 3, 7, 11, 12, 24, 32, 80, 127, 128, 255, 256, 4095, 4096, 4097, 8192];
    v.extend([0x7fff, 0x8000, 0xffff, 0x1_0000, 0xff_ffff, 0x100_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff]);
    v.extend([1 << 32, 1 << 40, 1 << 44, i64::MAX as u64, u64::MAX - 4095, u64::MAX]);
    v.extend([len, len - 1, len + 1, len / 32, len / 32 - 1, len / BLOCK_SIZE, len / BLOCK_SIZE - 1]);
    v
}

/// Apply one random mutation.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, hot: &[(u64, u64)], values: &[u64]) {
    if buf.is_empty() {
        buf.resize(BLOCK_SIZE as usize, 0);
        return;
    }
    let len = buf.len() as u64;
    let offset = |rng: &mut Rng, width: u64| -> usize {
        let off = if !hot.is_empty() && rng.chance(75) {
            let (start, n) = rng.pick(hot);
            let off = start + rng.below(n);
            if rng.chance(60) {
                off / width * width
            } else {
                off
            }
        } else {
            rng.below(len)
        };
        off.min(len.saturating_sub(width)) as usize
    };
    match rng.below(100) {
        0..=24 => {
            let at = offset(rng, 1);
            buf[at] ^= 1 << rng.below(8);
        }
        25..=34 => {
            let at = offset(rng, 1);
            buf[at] = rng.next() as u8;
        }
        35..=74 => {
            let width = rng.pick(&[1u64, 2, 2, 4, 4, 4, 8, 8]).min(len);
            let at = offset(rng, width);
            let v = if rng.chance(80) { rng.pick(values) } else { rng.next() };
            let v = if rng.chance(15) { v.wrapping_add(rng.below(3)).wrapping_sub(1) } else { v };
            buf[at..at + width as usize].copy_from_slice(&v.to_le_bytes()[..width as usize]);
        }
        75..=84 => {
            // Truncate, mostly to a block boundary so that parsing gets further.
            let new = if rng.chance(70) { rng.below(len / BLOCK_SIZE + 1) * BLOCK_SIZE } else { rng.below(len) };
            buf.truncate(new as usize);
        }
        85..=89 => {
            // Grow by whole blocks of zeros or copies of existing bytes.
            let extra = BLOCK_SIZE as usize * (1 + rng.below(2) as usize);
            let fill = if rng.chance(50) { 0 } else { rng.next() as u8 };
            buf.resize(buf.len() + extra, fill);
        }
        90..=95 => {
            // Copy a structure-sized range over another (e.g. an inode onto
            // another inode, a dirent block onto an inode).
            let n = rng.pick(&[12u64, 32, 64, 128, 256]).min(len);
            let (from, to) = (offset(rng, n), offset(rng, n));
            buf.copy_within(from..from + n as usize, to);
        }
        _ => {
            let n = rng.pick(&[4u64, 12, 32, 64, 4096]).min(len);
            let at = offset(rng, n);
            buf[at..at + n as usize].fill(0);
        }
    }
}

/// Run `f(input)` and turn a panic into a test failure that names the case
/// and saves the input for replay.
fn run_case<T>(what: &str, seed: u64, input: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(t) => t,
        Err(_) => {
            let path = std::env::temp_dir().join(format!("nydus-robustness-{what}-{seed:016x}.bin"));
            let _ = std::fs::write(&path, input);
            panic!("{what}: panic on case seed {seed:#018x}; input saved to {}", path.display());
        }
    }
}

const BUDGET: Duration = Duration::from_secs(15);

#[test]
fn mutated_bootstraps_never_panic() {
    let iterations: u64 = if cfg!(debug_assertions) { 1_500 } else { 25_000 };
    let start = Instant::now();
    let images = sample_images();
    let (mut total, mut parsed, mut walked, mut slowest) = (0u64, 0u64, 0u64, Duration::ZERO);
    for (k, (name, pristine)) in images.iter().enumerate() {
        let hot = hot_regions(pristine);
        let values = interesting_values(pristine.len() as u64);
        for i in 0..iterations {
            if start.elapsed() > BUDGET * (k as u32 + 1) / images.len() as u32 {
                break;
            }
            let seed = (k as u64) << 32 | i;
            let mut rng = Rng(seed);
            let mut buf = pristine.clone();
            let mutations = 1 + rng.below(4).min(rng.below(4));
            for _ in 0..mutations {
                mutate(&mut rng, &mut buf, &hot, &values);
            }
            let t = Instant::now();
            let o = run_case(name, seed, &buf, traverse);
            let took = t.elapsed();
            assert!(took < Duration::from_secs(2), "{name}: case {seed:#x} took {took:?}");
            slowest = slowest.max(took);
            total += 1;
            parsed += o.parsed as u64;
            walked += (o.parsed && o.errors == 0) as u64;
        }
    }
    eprintln!(
        "{total} mutated images: {parsed} parsed, {walked} fully readable; slowest {slowest:?}, {:?} total",
        start.elapsed()
    );
    assert!(parsed * 4 > total, "mutations should mostly keep the superblock valid");
}

#[test]
fn random_and_truncated_inputs_never_panic() {
    let mut rng = Rng(7);
    for (name, pristine) in sample_images() {
        for len in (0..pristine.len()).step_by(509).chain([pristine.len() - 1]) {
            run_case(name, len as u64, &pristine[..len], traverse);
        }
    }
    for i in 0..200u64 {
        let len = rng.below(3) as usize * 4096 + rng.pick(&[0usize, 1, 1024, 1028, 1500]);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Give half of them a valid magic so the superblock checks run.
        if len >= 1028 && i % 2 == 0 {
            buf[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        }
        run_case("random", i, &buf, traverse);
    }
}

#[test]
fn mutated_directory_and_xattr_blocks_never_panic() {
    let mut rng = Rng(11);
    let entries: Vec<dir::DirEntry> = (0..400u32)
        .map(|i| dir::DirEntry { name: format!("entry-{i:05}").into_bytes(), nid: 1000 + i as u64, file_type: 1 })
        .collect();
    let dir_data = dir::encode(&entries).unwrap();
    let xattrs: xattr::Xattrs = vec![
        (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
        (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"user.a".to_vec(), vec![7; 40]),
    ];
    let mut xattr_area = Vec::new();
    xattr::encode(&xattrs, &mut xattr_area).unwrap();
    let values = interesting_values(4096);
    for i in 0..20_000u64 {
        let (mut buf, is_dir) = if i % 2 == 0 { (dir_data.clone(), true) } else { (xattr_area.clone(), false) };
        let hot = [(0, buf.len().min(512) as u64)];
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut buf, &hot, &values);
        }
        run_case(if is_dir { "dir" } else { "xattr" }, i, &buf, |b| {
            let _ = dir::decode(1, b);
            let _ = xattr::decode(b);
        });
    }
}

#[test]
fn mutated_blob_trailers_never_panic() {
    let chunks: Vec<ChunkLocation> = (0..64u64)
        .map(|i| ChunkLocation {
            compressed_offset: i * 2000,
            compressed_size: 2000,
            uncompressed_offset: i * 4096,
            uncompressed_size: 4096,
        })
        .collect();
    let mut rng = Rng(13);
    let values = interesting_values(8192);
    for compressor in [Compressor::None, Compressor::Zstd, Compressor::Lz4Block] {
        let t = encode_trailer(&chunks, compressor, 0x4000_0001, 64 * 2000).unwrap();
        let d = CiDescriptor {
            ci_offset: 64 * 2000,
            ci_compressed_size: t.ci_compressed_size,
            ci_uncompressed_size: t.ci_uncompressed_size,
            ci_compressor: t.ci_compressor.id(),
            chunk_count: 64,
            features: 0x4000_0001,
            uncompressed_size: 64 * 4096,
        };
        assert_eq!(decode_trailer(&d, &t.bytes).unwrap(), chunks);
        let hot = [(0, t.ci_compressed_size), (t.ci_compressed_size, 64)];
        for i in 0..3_000u64 {
            let mut buf = t.bytes.clone();
            let mut d = d;
            if rng.chance(30) {
                match rng.below(7) {
                    0 => d.ci_compressed_size = rng.pick(&values),
                    1 => d.ci_uncompressed_size = rng.pick(&values),
                    2 => d.chunk_count = rng.pick(&values) as u32,
                    3 => d.ci_compressor = rng.below(5) as u32,
                    4 => d.uncompressed_size = rng.pick(&values),
                    5 => d.ci_offset = rng.pick(&values),
                    _ => d.features = rng.next() as u32,
                }
            }
            for _ in 0..rng.below(3) {
                mutate(&mut rng, &mut buf, &hot, &values);
            }
            run_case("blob_meta", i, &buf, |b| decode_trailer(&d, b).map(|v| v.len()).ok());
        }
    }
}

/// Directories whose data blocks are shared would make `walk` quadratic:
/// 300 directories all listing the same 1500 names. They must be rejected.
#[test]
fn walk_rejects_directories_sharing_blocks() {
    let mut t = Tree::new();
    let f = t.file(0, b"f", 0, vec![]);
    let dirs: Vec<usize> = (0..300).map(|i| t.dir(0, format!("d{i:03}").as_bytes())).collect();
    for k in 0..1500 {
        t.link(dirs[0], format!("{k:04}").as_bytes(), f);
    }
    let spec = t.spec(0x1000, vec![], vec![]);
    let mut bytes = write_bootstrap(&spec).unwrap();
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let root = boot.inode(boot.sb.root_nid).unwrap();
    let d0 = boot.inode(boot.lookup(&root, b"d000").unwrap().unwrap().nid).unwrap();
    assert!(d0.compact && d0.size > 4 * BLOCK_SIZE);
    let full = d0.size / BLOCK_SIZE * BLOCK_SIZE;
    let others: Vec<u64> =
        (1..300).map(|i| boot.lookup(&root, format!("d{i:03}").as_bytes()).unwrap().unwrap().nid).collect();
    let others: Vec<u64> = others.into_iter().map(|nid| boot.inode(nid).unwrap().offset).collect();
    for off in others {
        // Compact inode: i_format at 0 (FLAT_PLAIN), i_size at 8, i_u at 16.
        let off = off as usize;
        bytes[off..off + 2].copy_from_slice(&0u16.to_le_bytes());
        bytes[off + 8..off + 12].copy_from_slice(&(full as u32).to_le_bytes());
        bytes[off + 16..off + 20].copy_from_slice(&d0.i_u.to_le_bytes());
    }
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let mut names = 0;
    let err = boot
        .walk(|_, _, _| {
            names += 1;
            Ok(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("shared with another directory"), "{err}");
    assert!(names < 2 * 1500 + 300, "stopped at the second directory, after {names} names");
}

/// Inputs that once crashed a decoder (found by fuzzing or by the mutation
/// tests above); each must now be rejected without panicking.
#[test]
fn regressions() {
    // blob_meta: `ci_compressed_size + 4096` overflowed.
    let d = CiDescriptor {
        ci_offset: 0,
        ci_compressed_size: u64::MAX - 100,
        ci_uncompressed_size: 0,
        ci_compressor: 0,
        chunk_count: 0,
        features: 0,
        uncompressed_size: 0,
    };
    assert!(decode_trailer(&d, &[0; 4096]).is_err());

    // blob_meta: a header agreeing with a descriptor of 2^32 - 1 chunks asked
    // the decompressor for a 64 GiB buffer; and `uncompressed_size` near
    // u64::MAX overflowed when rounded up to a block.
    let t = encode_trailer(&[], Compressor::None, 1, 0).unwrap();
    let mut bytes = t.bytes.clone();
    bytes[8..12].copy_from_slice(&Compressor::Zstd.id().to_le_bytes()); // s_ci_compressor
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // s_ci_entries
    bytes[32..40].copy_from_slice(&(16 * u32::MAX as u64).to_le_bytes()); // s_ci_uncompressed_size
    let d = CiDescriptor {
        ci_offset: 0,
        ci_compressed_size: 0,
        ci_uncompressed_size: 16 * u32::MAX as u64,
        ci_compressor: Compressor::Zstd.id(),
        chunk_count: u32::MAX,
        features: 1,
        uncompressed_size: 0,
    };
    let err = decode_trailer(&d, &bytes).unwrap_err();
    assert!(err.to_string().contains("exceed"), "{err}");
    let one =
        ChunkLocation { compressed_offset: 0, compressed_size: 10, uncompressed_offset: 0, uncompressed_size: 10 };
    let t = encode_trailer(&[one], Compressor::None, 1, 10).unwrap();
    let d = CiDescriptor {
        ci_offset: 10,
        ci_compressed_size: 16,
        ci_uncompressed_size: 16,
        ci_compressor: 0,
        chunk_count: 1,
        features: 1,
        uncompressed_size: u64::MAX,
    };
    assert_eq!(decode_trailer(&d, &t.bytes).unwrap(), [one]);
}

/// Write fuzzing seeds for the targets in `tests/fuzz`:
/// `NYDUS_SEED_DIR=$PWD/tests/fuzz/seeds cargo test -p nydus-format --test robustness -- --ignored dump_seeds`
#[test]
#[ignore]
fn dump_seeds() {
    let root = std::path::PathBuf::from(std::env::var("NYDUS_SEED_DIR").expect("set NYDUS_SEED_DIR"));
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, bytes) in sample_images() {
        write("bootstrap", &format!("writer-{name}.boot"), &bytes);
    }

    let chunks: Vec<ChunkLocation> = (0..20u64)
        .map(|i| ChunkLocation {
            compressed_offset: i * 1000,
            compressed_size: 1000 + i as u32,
            uncompressed_offset: i * 8192,
            uncompressed_size: 4097 + 100 * i as u32,
        })
        .collect();
    for compressor in [Compressor::None, Compressor::Zstd, Compressor::Lz4Block] {
        let t = encode_trailer(&chunks, compressor, 0x4000_0001, 20 * 1000 + 19).unwrap();
        let d = CiDescriptor {
            ci_offset: 20 * 1000 + 19,
            ci_compressed_size: t.ci_compressed_size,
            ci_uncompressed_size: t.ci_uncompressed_size,
            ci_compressor: t.ci_compressor.id(),
            chunk_count: 20,
            features: 0x4000_0001,
            uncompressed_size: 20 * 8192,
        };
        assert!(decode_trailer(&d, &t.bytes).is_ok());
        let mut input = support::inputs::blob_meta_input(&d, &t.bytes);
        write("blob_meta", &format!("{}.exact", compressor.name()), &input);
        input[0] = 1;
        write("blob_meta", &format!("{}.from-header", compressor.name()), &input);
    }

    for n in [0u32, 3, 300] {
        let mut entries: Vec<dir::DirEntry> = (0..n)
            .map(|i| dir::DirEntry {
                name: format!("name-{}", "x".repeat(i as usize % 40)).into_bytes(),
                nid: 200 + i as u64,
                file_type: 1 + (i % 7) as u8,
            })
            .collect();
        for (i, e) in entries.iter_mut().enumerate() {
            e.name.extend_from_slice(format!("{i:04}").as_bytes());
        }
        entries.push(dir::DirEntry { name: b".".to_vec(), nid: 128, file_type: 2 });
        entries.push(dir::DirEntry { name: b"..".to_vec(), nid: 128, file_type: 2 });
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        write("dir_xattr", &format!("dir-{n}"), &dir::encode(&entries).unwrap());
    }
    let xattrs: xattr::Xattrs = vec![
        (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0, 0, 0]),
        (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
        (b"system.posix_acl_default".to_vec(), vec![2, 0, 0, 0]),
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"user.mime_type".to_vec(), b"text/plain".to_vec()),
    ];
    let mut area = Vec::new();
    xattr::encode(&xattrs, &mut area).unwrap();
    write("dir_xattr", "xattrs", &area);
}
