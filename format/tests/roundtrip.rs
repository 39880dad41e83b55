//! Write images with `writer::write_bootstrap`, parse them back with
//! `reader::Bootstrap` and check that every attribute survives.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use nydus_format::dir::DirEntry;
use nydus_format::ondisk::{file_type, BLOCK_SIZE, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, MAX_BLOBS};
use nydus_format::reader::{Bootstrap, Inode};
use nydus_format::writer::{file_type_of, libc_ifmt as ifmt, write_bootstrap, ImageSpec};
use nydus_format::{flags, FormatError};
use support::tree::{chunk, fake_blob, file_chunks, Tree, DIR, REG};

/// Absolute path of every node, as `walk` reports it.
fn node_paths(spec: &ImageSpec) -> Vec<Vec<u8>> {
    let mut paths: Vec<Vec<u8>> = vec![b"/".to_vec()];
    for n in &spec.nodes[1..] {
        assert!(n.parent < paths.len(), "tests add parents before children");
        let mut p = if n.parent == 0 { Vec::new() } else { paths[n.parent].clone() };
        p.push(b'/');
        p.extend_from_slice(&n.name);
        paths.push(p);
    }
    paths
}

/// Link count of every node: 2 + subdirectories for directories, 1 + extra
/// hard-link names otherwise.
fn expected_nlinks(spec: &ImageSpec) -> Vec<u32> {
    let is_dir = |n: &nydus_format::writer::NodeSpec| n.mode & ifmt::S_IFMT == ifmt::S_IFDIR;
    let mut nlink: Vec<u32> = spec.nodes.iter().map(|n| if is_dir(n) { 2 } else { 1 }).collect();
    for n in &spec.nodes[1..] {
        match n.link_to {
            Some(t) => nlink[t] += 1,
            None if is_dir(n) => nlink[n.parent] += 1,
            None => {}
        }
    }
    nlink
}

/// Write `spec`, parse it back and check every node against it. Returns the
/// bytes and the nid of every node.
fn roundtrip(spec: &ImageSpec) -> (Vec<u8>, Vec<u64>) {
    let bytes = write_bootstrap(spec).expect("write");
    assert_eq!(bytes.len() as u64 % BLOCK_SIZE, 0);
    let nids = check(spec, &bytes);
    (bytes, nids)
}

fn check(spec: &ImageSpec, bytes: &[u8]) -> Vec<u64> {
    let boot = Bootstrap::parse(bytes).expect("parse");
    assert_eq!(boot.sb.chunk_size, spec.chunk_size);
    assert_eq!(boot.sb.compressor, spec.compressor);
    assert_eq!(boot.sb.digester, spec.digester);
    check_blobs(spec, &boot);

    let mut seen: HashMap<Vec<u8>, (DirEntry, Inode)> = HashMap::new();
    boot.walk(|path, e, ino| {
        assert!(seen.insert(path.to_vec(), (e.clone(), *ino)).is_none(), "path {path:?} walked twice");
        Ok(())
    })
    .expect("walk");
    assert_eq!(seen.len(), spec.nodes.len(), "walk reports every name once");

    let paths = node_paths(spec);
    let nids: Vec<u64> = paths.iter().map(|p| seen[p].1.nid).collect();
    let nlinks = expected_nlinks(spec);
    for (i, n) in spec.nodes.iter().enumerate() {
        let t = n.link_to.unwrap_or(i);
        let (entry, ino) = &seen[&paths[i]];
        assert_eq!(nids[i], nids[t], "hard link {:?} shares its target's nid", paths[i]);
        if i > 0 {
            assert_eq!(entry.name, n.name);
            assert_eq!(entry.file_type, file_type_of(spec.nodes[t].mode));
        }
        check_inode(spec, &boot, t, ino, &nids, nlinks[t]);
    }

    let want_prefetch: Vec<u64> =
        if spec.blobs.is_empty() { vec![] } else { spec.prefetch.iter().map(|&p| nids[p]).collect() };
    assert_eq!(boot.prefetch_nids().unwrap(), want_prefetch);

    let distinct: HashSet<(u32, u32)> = spec
        .nodes
        .iter()
        .filter(|n| n.link_to.is_none())
        .flat_map(|n| n.chunks.iter().map(|c| (c.blob_index, c.ci_index)))
        .collect();
    assert_eq!(boot.chunk_records().unwrap().len(), distinct.len(), "one chunk record per distinct chunk");
    nids
}

fn check_blobs<B: AsRef<[u8]>>(spec: &ImageSpec, boot: &Bootstrap<B>) {
    assert_eq!(boot.blobs.len(), spec.blobs.len());
    for (i, (b, s)) in boot.blobs.iter().zip(&spec.blobs).enumerate() {
        assert_eq!(b.blob_index as usize, i);
        assert_eq!(b.blob_id, s.blob_id);
        assert_eq!(b.chunk_count, s.chunk_count);
        assert_eq!(b.chunk_size, spec.chunk_size);
        assert_eq!((b.compressor, b.digester, b.features), (s.compressor, s.digester, s.features));
        assert_eq!((b.compressed_size, b.uncompressed_size), (s.compressed_size, s.uncompressed_size));
        assert_eq!(b.ci_compressor, s.ci_compressor.id());
        assert_eq!(
            (b.ci_offset, b.ci_compressed_size, b.ci_uncompressed_size),
            (s.ci_offset, s.ci_compressed_size, s.ci_uncompressed_size)
        );
        assert_eq!(b.device_blocks as u64 * BLOCK_SIZE, s.uncompressed_size);
        assert!(b.data_supported().is_ok());
    }
}

fn check_inode<B: AsRef<[u8]>>(spec: &ImageSpec, boot: &Bootstrap<B>, t: usize, ino: &Inode, nids: &[u64], nlink: u32) {
    let n = &spec.nodes[t];
    let what = String::from_utf8_lossy(&n.name);
    assert_eq!(ino.mode, n.mode, "{what}: mode");
    assert_eq!((ino.uid, ino.gid), (n.uid, n.gid), "{what}: owner");
    assert_eq!((ino.mtime, ino.mtime_nsec), (n.mtime, n.mtime_nsec), "{what}: mtime");
    assert_eq!(ino.ino, n.ino, "{what}: ino");
    assert_eq!(ino.nlink, nlink, "{what}: nlink");
    let fits_compact =
        n.mtime == 0 && n.mtime_nsec == 0 && n.uid <= 0xffff && n.gid <= 0xffff && ino.size <= u32::MAX as u64;
    assert_eq!(ino.compact, fits_compact, "{what}: inode form");
    assert_eq!(boot.xattrs(ino).unwrap(), n.xattrs, "{what}: xattrs");
    assert_eq!(boot.inode(ino.nid).unwrap(), *ino);
    match n.mode & ifmt::S_IFMT {
        ifmt::S_IFDIR => {
            let entries = boot.read_dir(ino).unwrap();
            let mut want: Vec<(Vec<u8>, u64)> =
                n.children.iter().map(|&c| (spec.nodes[c].name.clone(), nids[c])).collect();
            want.push((b".".to_vec(), nids[t]));
            want.push((b"..".to_vec(), nids[n.parent]));
            want.sort();
            let got: Vec<(Vec<u8>, u64)> = entries.iter().map(|e| (e.name.clone(), e.nid)).collect();
            assert_eq!(got, want, "{what}: entries");
            // Look up a sample of the names (each lookup decodes the whole directory).
            for e in entries.iter().step_by((entries.len() / 32).max(1)) {
                assert_eq!(boot.lookup(ino, &e.name).unwrap().as_ref(), Some(e));
            }
            assert_eq!(boot.lookup(ino, b"\x01not there").unwrap(), None);
        }
        ifmt::S_IFLNK => {
            assert_eq!(ino.size, n.symlink.len() as u64);
            assert_eq!(boot.readlink(ino).unwrap(), n.symlink, "{what}: target");
        }
        ifmt::S_IFREG => {
            assert_eq!(ino.size, n.size, "{what}: size");
            let chunks = boot.chunks(ino).unwrap();
            assert_eq!(chunks.len(), n.chunks.len());
            for (c, s) in chunks.iter().zip(&n.chunks) {
                assert_eq!((c.blob_index, c.ci_index), (s.blob_index, s.ci_index), "{what}: chunk index");
                assert_eq!(c.blkaddr as u64 * BLOCK_SIZE, s.uncompressed_offset, "{what}: chunk blkaddr");
                let r = boot.chunk_info(c).unwrap();
                assert_eq!((r.digest, r.blob_index, r.index, r.flags), (s.digest, s.blob_index, s.ci_index, s.flags));
                assert_eq!((r.compressed_offset, r.compressed_size), (s.compressed_offset, s.compressed_size));
                assert_eq!((r.uncompressed_offset, r.uncompressed_size), (s.uncompressed_offset, s.uncompressed_size));
                assert_eq!(r.crc32, s.crc32);
            }
        }
        ifmt::S_IFCHR | ifmt::S_IFBLK => assert_eq!(ino.rdev(), n.rdev, "{what}: rdev"),
        _ => assert_eq!(ino.size, 0),
    }
}

fn find(boot: &Bootstrap<&[u8]>, path: &str) -> Inode {
    boot.lookup_path(path).unwrap().unwrap_or_else(|| panic!("{path} not found"))
}

#[test]
fn every_attribute_survives() {
    let cs = 0x1000;
    let mut t = Tree::new();
    t.node(0).mtime = 1_600_000_000;
    t.node(0).mtime_nsec = 1;
    let compact = t.file(0, b"compact", 10, file_chunks(0, 0, 10, cs));
    t.node(compact).uid = 65535;
    t.node(compact).gid = 65535;
    let ext = t.file(0, b"extended", 2 * cs as u64, file_chunks(0, 1, 2 * cs as u64, cs));
    t.node(ext).uid = 65536;
    t.node(ext).gid = 4_000_000_000;
    t.node(ext).mtime = 1_712_345_678;
    t.node(ext).mtime_nsec = 999_999_999;
    let far = t.file(0, b"far-future", 0, vec![]);
    t.node(far).mtime = u64::MAX;
    let nsec_only = t.file(0, b"nsec-only", 0, vec![]);
    t.node(nsec_only).mtime_nsec = 5;
    let setuid = t.add(0, b"setuid", ifmt::S_IFREG | 0o7755);
    t.node(setuid).ino = u32::MAX;
    let x = t.file(0, b"xattrs", 0, vec![]);
    t.node(x).xattrs = vec![
        (b"user.empty".to_vec(), vec![]),
        (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]),
        (b"system.posix_acl_default".to_vec(), vec![2, 0, 0, 0]),
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"security.selinux".to_vec(), b"system_u:object_r:bin_t:s0\0".to_vec()),
        (b"user.".to_vec(), b"empty suffix".to_vec()),
        (format!("user.{}", "n".repeat(255)).into_bytes(), vec![0xab; 3000]),
    ];
    let xd = t.dir(0, b"xattr-dir");
    t.node(xd).xattrs = vec![(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())];
    t.symlink(xd, b"inline-with-xattr", b"../xattrs");

    // Devices: minor > 255, major > 255, both at their maxima.
    let mut null = 0;
    for (name, kind, rdev) in [
        (&b"null"[..], ifmt::S_IFCHR, (1, 3)),
        (b"minor-big", ifmt::S_IFCHR, (4, 300)),
        (b"major-big", ifmt::S_IFBLK, (259, 0)),
        (b"both-max", ifmt::S_IFBLK, (0xfff, 0xf_ffff)),
        (b"zero", ifmt::S_IFCHR, (0, 0)),
    ] {
        let d = t.add(0, name, kind | 0o660);
        t.node(d).rdev = rdev;
        if name == b"null" {
            null = d;
        }
    }
    t.add(0, b"fifo", ifmt::S_IFIFO | 0o600);
    let sock = t.add(0, b"sock", ifmt::S_IFSOCK | 0o777);
    t.node(sock).mtime = 7;

    // Symlinks of every interesting length.
    let links = t.dir(0, b"links");
    for len in [1usize, 59, 60, 4000, 4064, 4095, 4096] {
        t.symlink(links, format!("len{len}").as_bytes(), &vec![b'a' + (len % 26) as u8; len]);
    }

    // Hard links: two extra names for a file (one in another directory), one
    // for a symlink and one for a device.
    let hl = t.dir(0, b"hl");
    t.link(hl, b"compact-again", compact);
    t.link(0, b"compact-thrice", compact);
    let s = t.symlink(hl, b"sym", b"target");
    t.link(hl, b"sym2", s);
    t.link(hl, b"null2", null);

    let empty = t.dir(0, b"empty");
    t.dir(empty, b"nested-empty");

    let spec = t.spec(cs, vec![fake_blob(0, 3, cs)], vec![compact, ext]);
    let (bytes, nids) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    assert_eq!(boot.sb.root_nid, nids[0]);
    assert!(boot.sb.flags & flags::HAS_XATTR != 0);
    assert!(find(&boot, "/compact").compact);
    assert!(!find(&boot, "/extended").compact);
    assert!(!find(&boot, "/nsec-only").compact);
    assert!(!find(&boot, "/").compact);
    assert_eq!(find(&boot, "/compact").nlink, 3);
    assert_eq!(find(&boot, "/links").nlink, 2);
    assert_eq!(find(&boot, "/").nlink, 2 + 4);
    assert_eq!(find(&boot, "/hl/null2").rdev(), (1, 3));
    assert_eq!(find(&boot, "/both-max").rdev(), (0xfff, 0xf_ffff));
    assert_eq!(find(&boot, "/hl/sym2").nid, find(&boot, "/hl/sym").nid);
    assert_eq!(find(&boot, "/./hl//sym2").nid, find(&boot, "/hl/sym").nid);
    assert_eq!(boot.lookup_path("/compact/below-a-file").unwrap(), None);
    assert_eq!(boot.lookup_path("/nope").unwrap(), None);
    let short = find(&boot, "/links/len1");
    assert_eq!(short.layout, LAYOUT_FLAT_INLINE);
    let full = find(&boot, "/links/len4096");
    assert_eq!((full.layout, full.size), (LAYOUT_FLAT_PLAIN, 4096));
}

#[test]
fn large_file_needs_extended_inode() {
    let cs = 0x100_0000;
    let size = 5 << 30;
    let mut t = Tree::new();
    let chunks = file_chunks(0, 0, size, cs);
    assert_eq!(chunks.len(), 320);
    t.file(0, b"huge", size, chunks);
    let (bytes, _) = roundtrip(&t.spec(cs, vec![fake_blob(0, 320, cs)], vec![]));
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let ino = find(&boot, "/huge");
    assert!(!ino.compact);
    assert_eq!(ino.size, 5 << 30);
}

#[test]
fn directories_spanning_blocks() {
    let mut t = Tree::new();
    let big = t.dir(0, b"big");
    let mut names: Vec<Vec<u8>> =
        vec![b"!a".to_vec(), b"-x".to_vec(), b" sp".to_vec(), b".a".to_vec(), b"...".to_vec(), b"\xff\xfe".to_vec()];
    for i in 0..1994usize {
        let len = 1 + (i * 37) % 255;
        let mut name = format!("{i}-").into_bytes();
        name.resize(len.max(name.len()), b'a' + (i % 26) as u8);
        names.push(name);
    }
    for (k, n) in names.iter().enumerate() {
        match k % 3 {
            0 => t.file(big, n, 0, vec![]),
            1 => t.dir(big, n),
            _ => t.symlink(big, n, b"x"),
        };
    }
    // A directory whose data is exactly one block: '.', '..', 15 names of 255
    // bytes and one of 52 (27 + 15 * 267 + 64 = 4096).
    let exact = t.dir(0, b"exact");
    for i in 0..15u8 {
        t.file(exact, &[b'a' + i; 255], 0, vec![]);
    }
    t.file(exact, &[b'z'; 52], 0, vec![]);
    // Entries that do not fit in the first block's tail.
    let tail = t.dir(0, b"tail");
    for i in 0..17u8 {
        t.file(tail, &[b'a' + i; 255], 0, vec![]);
    }

    let spec = t.spec(0x1000, vec![], vec![]);
    let (bytes, nids) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let dir = boot.inode(nids[big]).unwrap();
    assert!(dir.size > 20 * BLOCK_SIZE, "spans many blocks: {}", dir.size);
    let entries = boot.read_dir(&dir).unwrap();
    assert_eq!(entries.len(), 2000 + 2);
    assert_eq!(entries[0].name, b" sp");
    assert_eq!(entries[1].name, b"!a");
    assert_eq!(entries[2].name, b"-x");
    assert_eq!(
        (&entries[3].name[..], &entries[4].name[..], &entries[5].name[..]),
        (&b"."[..], &b".."[..], &b"..."[..])
    );
    assert_eq!(entries.last().unwrap().name, b"\xff\xfe");
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
    let k = names.iter().position(|n| n.len() == 255).unwrap();
    let e = boot.lookup(&dir, &names[k]).unwrap().unwrap();
    assert_eq!(e.file_type, [file_type::REG, file_type::DIR, file_type::LNK][k % 3]);
    assert_eq!(find(&boot, "/big/ sp").nid, e_nid(&boot, &dir, b" sp"));

    let exact = boot.inode(nids[exact]).unwrap();
    assert_eq!((exact.size, exact.layout), (BLOCK_SIZE, LAYOUT_FLAT_PLAIN));
    assert_eq!(boot.read_dir(&exact).unwrap().len(), 18);
    let tail = boot.inode(nids[tail]).unwrap();
    assert!(tail.size > BLOCK_SIZE);
    assert_eq!(boot.read_dir(&tail).unwrap().len(), 19);
}

fn e_nid(boot: &Bootstrap<&[u8]>, dir: &Inode, name: &[u8]) -> u64 {
    boot.lookup(dir, name).unwrap().unwrap().nid
}

#[test]
fn empty_directories() {
    let mut t = Tree::new();
    let a = t.dir(0, b"a");
    let b = t.dir(a, b"b");
    let c = t.dir(b, b"c");
    t.dir(0, b"z");
    let spec = t.spec(0x1000, vec![], vec![]);
    let (bytes, nids) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let ino = boot.inode(nids[c]).unwrap();
    assert_eq!(ino.nlink, 2);
    let names: Vec<Vec<u8>> = boot.read_dir(&ino).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, [b".".to_vec(), b"..".to_vec()]);
    assert_eq!(e_nid(&boot, &ino, b".."), nids[b]);
    let root = boot.inode(boot.sb.root_nid).unwrap();
    assert_eq!(e_nid(&boot, &root, b".."), boot.sb.root_nid);
    assert_eq!(root.nlink, 4);

    // A root with no children at all.
    let (bytes, _) = roundtrip(&Tree::new().spec(0x1000, vec![], vec![]));
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let mut n = 0;
    boot.walk(|_, _, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn tree_with_120k_entries() {
    let start = Instant::now();
    let cs = 0x1000;
    let mut t = Tree::new();
    let mut ci = 0;
    for d in 0..300 {
        let dir = t.dir(0, format!("dir{d:03}").as_bytes());
        for f in 0..400 {
            let size = 1 + (f as u64 * 97) % 6000;
            let chunks = file_chunks(0, ci, size, cs);
            ci += chunks.len() as u32;
            t.file(dir, format!("file-{f:04}-with-a-longer-name").as_bytes(), size, chunks);
        }
    }
    let spec = t.spec(cs, vec![fake_blob(0, ci, cs)], vec![1, 2, 3]);
    assert_eq!(spec.nodes.len(), 120_301);
    assert!(ci > 0x1_0000);
    let bytes = write_bootstrap(&spec).unwrap();
    let written = start.elapsed();
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    let mut n = 0;
    boot.walk(|_, _, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 120_301);
    let walked = start.elapsed() - written;
    check(&spec, &bytes);
    let total = start.elapsed();
    eprintln!("120k tree: {} bytes, write {written:?}, walk {walked:?}, full check {total:?}", bytes.len());
    assert!((written + walked).as_secs() < 30, "write {written:?} + walk {walked:?}");
    assert!(total.as_secs() < 120, "took {total:?}");
}

#[test]
fn chunk_indexes_and_records() {
    let cs = 0x1_0000; // 64 KiB
    let mut t = Tree::new();
    // ci indexes around the 16-bit boundary and at the 24-bit maximum.
    let cis = [0u32, 1, 0xffff, 0x1_0000, 0x1_0001, 0x12_3456, 0xff_ffff];
    let chunks: Vec<_> = cis.iter().enumerate().map(|(k, &ci)| chunk(1, ci, cs, k as u64 * cs as u64, cs)).collect();
    let size = cis.len() as u64 * cs as u64;
    let a = t.file(0, b"a", size, chunks.clone());
    // Same chunks again (dedup: one record each) plus chunks of blob 0 and 2.
    let mut mixed = chunks.clone();
    mixed.push(chunk(0, 5, cs, size, 100));
    let b = t.file(0, b"b", size + 100, mixed);
    // Chunks need not be in blob order; (0, 5) is shared with `b`.
    let c = t.file(
        0,
        b"c",
        2 * cs as u64 + 100,
        vec![chunk(2, 9, cs, 0, cs), chunk(2, 0, cs, cs as u64, cs), chunk(0, 5, cs, 2 * cs as u64, 100)],
    );
    let blobs = vec![fake_blob(0, 6, cs), fake_blob(1, 0x100_0000, cs), fake_blob(2, 10, cs)];
    let spec = t.spec(cs, blobs, vec![a, c, b]);
    let (bytes, nids) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    assert_eq!(boot.chunk_records().unwrap().len(), cis.len() + 3);
    let got = boot.chunks(&boot.inode(nids[a]).unwrap()).unwrap();
    let ci_got: Vec<u32> = got.iter().map(|c| c.ci_index).collect();
    assert_eq!(ci_got, cis);
    assert!(got.iter().all(|c| c.blob_index == 1));
    assert_eq!(got[6].blkaddr as u64 * BLOCK_SIZE, 0xff_ffff * cs as u64);
    assert_eq!(boot.prefetch_nids().unwrap(), vec![nids[a], nids[c], nids[b]]);
    assert_eq!(boot.sb.blocks as u64, (6 + 0x100_0000 + 10) * cs as u64 / BLOCK_SIZE);
}

#[test]
fn maximum_blob_count() {
    let cs = 0x1000;
    let mut t = Tree::new();
    let blobs: Vec<_> = (0..MAX_BLOBS as u32).map(|i| fake_blob(i, 2, cs)).collect();
    for i in [0u32, 1, 127, 128, 252, 253] {
        t.file(
            0,
            format!("f{i}").as_bytes(),
            cs as u64 + 1,
            vec![chunk(i, 1, cs, 0, cs), chunk(i, 0, cs, cs as u64, 1)],
        );
    }
    let spec = t.spec(cs, blobs, (1..=6).collect());
    let (bytes, _) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    assert_eq!(boot.blobs.len(), MAX_BLOBS);
    let last = boot.chunks(&find(&boot, "/f253")).unwrap();
    assert_eq!(last[0].blob_index, 253);
}

#[test]
fn zero_blob_image() {
    let mut t = Tree::new();
    t.file(0, b"empty-file", 0, vec![]);
    t.symlink(0, b"dangling", b"/nowhere");
    let d = t.dir(0, b"d");
    t.add(d, b"fifo", ifmt::S_IFIFO | 0o644);
    // The prefetch table needs blobs; it is omitted otherwise.
    let spec = t.spec(0x1000, vec![], vec![1, 2]);
    let (bytes, _) = roundtrip(&spec);
    let boot = Bootstrap::parse(&bytes[..]).unwrap();
    assert!(boot.blobs.is_empty());
    assert_eq!(boot.sb.chunk_table.1, 0);
    assert_eq!(boot.sb.prefetch_table.1, 0);
    assert_eq!(boot.sb.blocks, 0);
    assert!(boot.prefetch_nids().unwrap().is_empty());
    assert!(boot.chunk_records().unwrap().is_empty());
    let f = find(&boot, "/empty-file");
    assert!(boot.chunks(&f).unwrap().is_empty());
    assert_eq!(bytes.len() as u64 % BLOCK_SIZE, 0);
}

#[test]
fn sample_images_traverse_cleanly() {
    for (name, bytes) in support::tree::sample_images() {
        let o = support::traverse::traverse(&bytes);
        assert!(o.parsed, "{name}");
        assert_eq!(o.errors, 0, "{name}");
        assert!(o.entries > 5, "{name}");
    }
}

#[test]
fn truncated_images_are_rejected() {
    let (_, bytes) = support::tree::sample_images().remove(0);
    for len in [0, 1024, 1100, 4096, bytes.len() - 4096, bytes.len() - 1] {
        assert!(Bootstrap::parse(&bytes[..len]).is_err(), "len {len}");
    }
}

fn encode_err(spec: &ImageSpec) -> String {
    match write_bootstrap(spec) {
        Err(e @ FormatError::Encode(_)) | Err(e @ FormatError::Xattr(_)) => e.to_string(),
        other => panic!("expected an encode error, got {:?}", other.map(|b| b.len())),
    }
}

#[test]
fn writer_rejects_bad_specs() {
    let cs = 0x1000;
    let base = || {
        let mut t = Tree::new();
        t.file(0, b"b", 1, vec![chunk(0, 0, cs, 0, 1)]);
        t.file(0, b"a", 0, vec![]);
        t
    };
    let ok = base().spec(cs, vec![fake_blob(0, 1, cs)], vec![]);
    assert!(write_bootstrap(&ok).is_ok());

    // Unsorted and duplicated children.
    let mut s = ok.clone();
    s.nodes[0].children.reverse();
    assert!(encode_err(&s).contains("not sorted"));
    let mut s = ok.clone();
    s.nodes[2].name = b"b".to_vec();
    assert!(encode_err(&s).contains("not sorted"));
    // A child that names another parent.
    let mut s = ok.clone();
    s.nodes[1].parent = 2;
    assert!(encode_err(&s).contains("parent"));

    // Chunk sizes: not a power of two, too small, too large.
    for bad in [0, 0x800, 0x3000, 0x200_0000, u32::MAX] {
        let mut s = ok.clone();
        s.chunk_size = bad;
        assert!(encode_err(&s).contains("chunk size"), "{bad:#x}");
    }

    // Too many blobs.
    let mut s = ok.clone();
    s.blobs = (0..MAX_BLOBS as u32 + 1).map(|i| fake_blob(i, 1, cs)).collect();
    assert!(encode_err(&s).contains("blobs"));

    // Symlink targets: empty and too long.
    for target in [vec![], vec![b'x'; 4097]] {
        let mut t = base();
        t.symlink(0, b"s", &target);
        assert!(encode_err(&t.spec(cs, vec![fake_blob(0, 1, cs)], vec![])).contains("symlink"));
    }

    // Chunks: missing blob, wrong count, ci index beyond 24 bits.
    let mut s = ok.clone();
    s.nodes[1].chunks[0].blob_index = 1;
    assert!(encode_err(&s).contains("missing blob"));
    let mut s = ok.clone();
    s.nodes[1].size = cs as u64 + 1;
    assert!(encode_err(&s).contains("chunks for size"));
    let mut s = ok.clone();
    s.nodes[1].chunks[0].ci_index = 0x100_0000;
    assert!(write_bootstrap(&s).is_err());

    // Names: empty, '/', NUL, longer than 255.
    for name in [vec![], b"a/b".to_vec(), b"a\0".to_vec(), vec![b'a'; 256]] {
        let mut s = ok.clone();
        s.nodes[2].name = name;
        assert!(encode_err(&s).contains("invalid name"));
    }

    // Root not a directory; hard link to a directory or out of range.
    let mut s = ok.clone();
    s.nodes[0].mode = REG;
    assert!(encode_err(&s).contains("root"));
    let mut t = base();
    let d = t.dir(0, b"d");
    t.add(0, b"e", DIR);
    let e = t.nodes.len() - 1;
    t.node(e).link_to = Some(d);
    assert!(encode_err(&t.spec(cs, vec![fake_blob(0, 1, cs)], vec![])).contains("hard-link"));
    let mut s = ok.clone();
    s.nodes[2].link_to = Some(99);
    assert!(encode_err(&s).contains("hard-link"));

    // Unsupported xattr namespace; oversized value.
    let mut s = ok.clone();
    s.nodes[2].xattrs = vec![(b"system.nfs4_acl".to_vec(), vec![1])];
    assert!(encode_err(&s).contains("prefix"));
    let mut s = ok.clone();
    s.nodes[2].xattrs = vec![(b"user.big".to_vec(), vec![0; 65536])];
    assert!(encode_err(&s).contains("too long"));

    // Bad blob ids.
    for id in [String::new(), "x".repeat(65), "é".to_string()] {
        let mut s = ok.clone();
        s.blobs[0].blob_id = id;
        assert!(encode_err(&s).contains("blob id"));
    }
}
