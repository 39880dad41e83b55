//! Building `ImageSpec`s by hand: a small tree builder, fake blobs and a
//! few varied sample images.

use nydus_format::flags;
use nydus_format::ondisk::BLOCK_SIZE;
use nydus_format::writer::{libc_ifmt as ifmt, BlobSpec, ChunkSpec, ImageSpec, NodeSpec};
use nydus_format::{Compressor, Digester};

/// Directory mode.
pub const DIR: u32 = ifmt::S_IFDIR | 0o755;
/// Regular file mode.
pub const REG: u32 = ifmt::S_IFREG | 0o644;
/// Symlink mode.
pub const LNK: u32 = ifmt::S_IFLNK | 0o777;

/// A tree under construction; node 0 is the root. Parents are always added
/// before their children, so node order is a valid layout order.
pub struct Tree {
    /// The nodes; children lists are sorted by [`Tree::spec`].
    pub nodes: Vec<NodeSpec>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// A tree holding only the root directory.
    pub fn new() -> Self {
        Self { nodes: vec![NodeSpec { mode: DIR, ino: 1, ..Default::default() }] }
    }

    /// Add a node named `name` under `parent`.
    pub fn add(&mut self, parent: usize, name: &[u8], mode: u32) -> usize {
        let i = self.nodes.len();
        self.nodes.push(NodeSpec { name: name.to_vec(), parent, mode, ino: i as u32 + 1, ..Default::default() });
        self.nodes[parent].children.push(i);
        i
    }

    /// Add a directory.
    pub fn dir(&mut self, parent: usize, name: &[u8]) -> usize {
        self.add(parent, name, DIR)
    }

    /// Add a regular file of `size` bytes with the given chunks.
    pub fn file(&mut self, parent: usize, name: &[u8], size: u64, chunks: Vec<ChunkSpec>) -> usize {
        let i = self.add(parent, name, REG);
        self.nodes[i].size = size;
        self.nodes[i].chunks = chunks;
        i
    }

    /// Add a symlink.
    pub fn symlink(&mut self, parent: usize, name: &[u8], target: &[u8]) -> usize {
        let i = self.add(parent, name, LNK);
        self.nodes[i].symlink = target.to_vec();
        self.nodes[i].size = target.len() as u64;
        i
    }

    /// Add a hard link to node `target` (a copy of its attributes).
    pub fn link(&mut self, parent: usize, name: &[u8], target: usize) -> usize {
        let i = self.nodes.len();
        let mut n = self.nodes[target].clone();
        n.name = name.to_vec();
        n.parent = parent;
        n.children.clear();
        n.link_to = Some(target);
        self.nodes.push(n);
        self.nodes[parent].children.push(i);
        i
    }

    /// Mutable access to node `i`.
    pub fn node(&mut self, i: usize) -> &mut NodeSpec {
        &mut self.nodes[i]
    }

    /// Finish: sort every children list by name and wrap into an image.
    pub fn spec(mut self, chunk_size: u32, blobs: Vec<BlobSpec>, prefetch: Vec<usize>) -> ImageSpec {
        let names: Vec<Vec<u8>> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in &mut self.nodes {
            n.children.sort_by(|&a, &b| names[a].cmp(&names[b]));
        }
        ImageSpec {
            chunk_size,
            compressor: Compressor::Zstd,
            digester: Digester::Blake3,
            nodes: self.nodes,
            blobs,
            prefetch,
        }
    }
}

/// A plausible blob entry for a blob holding `chunk_count` chunks of
/// `chunk_size` bytes; chunk `k` lives at `k * chunk_size` uncompressed.
pub fn fake_blob(n: u32, chunk_count: u32, chunk_size: u32) -> BlobSpec {
    let compressed_size = chunk_count as u64 * chunk_size as u64 / 2;
    BlobSpec {
        blob_id: format!("{:064x}", 0xb10b_0000_u64 + n as u64),
        chunk_count,
        compressor: Compressor::Zstd,
        digester: Digester::Blake3,
        features: flags::BLOB_ALIGNED | flags::BLOB_CAP_TAR_TOC,
        compressed_size: compressed_size + 8 * chunk_count as u64 + 4096,
        uncompressed_size: (chunk_count as u64 * chunk_size as u64).div_ceil(BLOCK_SIZE) * BLOCK_SIZE,
        ci_compressor: Compressor::Zstd,
        ci_offset: compressed_size,
        ci_compressed_size: 8 * chunk_count as u64,
        ci_uncompressed_size: 16 * chunk_count as u64,
    }
}

/// Chunk `ci_index` of fake blob `blob_index`, holding `len` bytes of a file
/// at `file_offset`.
pub fn chunk(blob_index: u32, ci_index: u32, chunk_size: u32, file_offset: u64, len: u32) -> ChunkSpec {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&blob_index.to_le_bytes());
    digest[4..8].copy_from_slice(&ci_index.to_le_bytes());
    digest[31] = 0x5a;
    ChunkSpec {
        blob_index,
        ci_index,
        digest,
        flags: flags::CHUNK_COMPRESSED | flags::CHUNK_HAS_CRC32,
        compressed_offset: ci_index as u64 * chunk_size as u64 / 2,
        compressed_size: (len / 2).max(1),
        uncompressed_offset: ci_index as u64 * chunk_size as u64,
        uncompressed_size: len,
        file_offset,
        crc32: ci_index.wrapping_mul(0x9e37_79b9) ^ blob_index,
    }
}

/// Chunks for a file of `size` bytes stored in consecutive chunks of blob
/// `blob_index`, starting at ci index `first_ci`.
pub fn file_chunks(blob_index: u32, first_ci: u32, size: u64, chunk_size: u32) -> Vec<ChunkSpec> {
    let cs = chunk_size as u64;
    (0..size.div_ceil(cs))
        .map(|k| chunk(blob_index, first_ci + k as u32, chunk_size, k * cs, (size - k * cs).min(cs) as u32))
        .collect()
}

/// A few varied images: every file type, xattrs, hard links, several blobs,
/// a multi-block directory, long symlinks, a zero-blob image. Small enough
/// to be fuzzing seeds.
pub fn sample_images() -> Vec<(&'static str, Vec<u8>)> {
    let write = |s: ImageSpec| nydus_format::writer::write_bootstrap(&s).expect("sample image");
    let mut out = Vec::new();

    // 1. Every kind of inode, xattrs, hard links, two blobs, prefetch.
    let cs = 0x1000;
    let mut t = Tree::new();
    let d = t.dir(0, b"dir");
    let f = t.file(d, b"file", 3 * cs as u64 + 100, file_chunks(0, 0, 3 * cs as u64 + 100, cs));
    t.node(f).xattrs = vec![
        (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0, 0, 0]),
        (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
        (b"system.posix_acl_default".to_vec(), vec![2, 0, 0, 0, 1, 0]),
        (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
        (b"user.comment".to_vec(), b"hello".to_vec()),
    ];
    t.node(f).mtime = 1_700_000_000;
    t.node(f).mtime_nsec = 123_456_789;
    t.node(f).uid = 100_000;
    // Shares its last chunk with `file`.
    let g =
        t.file(0, b"other", cs as u64 + 100, vec![chunk(1, 70_000, cs, 0, cs), chunk(0, 3, cs, 3 * cs as u64, 100)]);
    t.link(d, b"hardlink", f);
    t.symlink(0, b"link", b"dir/file");
    let n = t.add(0, b"chr", ifmt::S_IFCHR | 0o600);
    t.node(n).rdev = (300, 70_000);
    let n = t.add(0, b"blk", ifmt::S_IFBLK | 0o600);
    t.node(n).rdev = (8, 1);
    t.add(0, b"fifo", ifmt::S_IFIFO | 0o644);
    t.add(0, b"sock", ifmt::S_IFSOCK | 0o644);
    t.dir(0, b"empty");
    t.file(0, b"zero", 0, vec![]);
    let blobs = vec![fake_blob(0, 8, cs), fake_blob(1, 70_001, cs)];
    out.push(("kinds", write(t.spec(cs, blobs, vec![f, g]))));

    // 2. A directory spanning several blocks, with names sorting around '.'.
    let mut t = Tree::new();
    let d = t.dir(0, b"big");
    for i in 0..300u32 {
        let len = 1 + (i as usize * 7) % 60;
        let mut name = format!("{i:04}").into_bytes();
        name.resize(len.max(4), b'x');
        t.file(d, &name, 0, vec![]);
    }
    for name in [&b"!a"[..], b"-x", b" sp", b".a", b"\xff\xfe"] {
        t.dir(d, name);
    }
    out.push(("bigdir", write(t.spec(0x10_0000, vec![fake_blob(0, 1, 0x10_0000)], vec![]))));

    // 3. Long symlinks and extended inodes, no blobs at all.
    let mut t = Tree::new();
    t.symlink(0, b"s4096", &[b'a'; 4096]);
    t.symlink(0, b"s4095", &[b'b'; 4095]);
    let s = t.symlink(0, b"s3000", &[b'c'; 3000]);
    t.node(s).gid = 70_000;
    let d = t.dir(0, b"sub");
    t.node(d).mtime = 1;
    t.dir(d, b"subsub");
    out.push(("noblobs", write(t.spec(0x1000, vec![], vec![]))));

    out
}
