//! `create --type estargztoc-ref`: a bootstrap whose chunks point into an
//! unmodified eStargz layer blob.
//!
//! Every data chunk the TOC lists (a `reg` entry and its `chunk` entries) is
//! the start of a gzip member at the entry's `offset`; the member's plain
//! data begins with the chunk and may go on (tar padding, the headers of the
//! next entries), so readers decode only the chunk's size
//! ([`nydus_format::Compressor::Gzip`]). A chunk's stored range runs to the
//! next chunk's member (or to the TOC member for the last one): it may hold
//! more than the member, never less. The blob gets no ci array: like the
//! blobs of converted RAFS v5 images, its chunks are located from the
//! bootstrap's chunk records (`ci_uncompressed_size == 0`, see
//! [`nydus_format::reader::recorded_locations`]), which nydusd, `check -D`
//! and `unpack` already read.
//!
//! The source is either the eStargz blob (its TOC is found through the
//! footer, the blob's size and TOC offset are exact) or the TOC file alone,
//! with the blob's size from `--blob-data-size`. The tree follows the tar
//! rules of [`crate::tarball`] (implicit parents, later entries win,
//! whiteouts per `--whiteout-spec`); the converter's landmark files are
//! dropped. Chunks are digested with SHA-256 (the TOC's `chunkDigest`);
//! the filesystem chunk size is the TOC's chunk size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use nydus_format::writer::{libc_ifmt, BlobSpec, ChunkSpec, NodeSpec};
use nydus_format::{flags, xattr, Compressor, Digester};
use sha2::{Digest as _, Sha256};

use crate::blob::{ChunkOptions, ChunkStats};
use crate::create::CreateOptions;
use crate::error::{BuildError, Result};
use crate::stargz_toc::{self as toc, entry_err, StargzError, Toc, TocEntry, LEGACY_FOOTER_SIZE};
use crate::tarball::{components, implicit_dir, TarTree};
use crate::tree::{Tree, WhiteoutSpec};

/// One data chunk of a file, as the TOC gives it.
#[derive(Debug, Clone)]
struct TocChunk {
    /// Blob offset of its gzip member.
    offset: u64,
    /// Offset in the file.
    file_offset: u64,
    /// Plain size.
    size: u32,
    /// SHA-256 of the plain data, if the TOC has it.
    digest: Option<[u8; 32]>,
}

/// The data of one `reg` entry: its size and chunks in file order.
#[derive(Debug, Clone)]
struct FileData {
    size: u64,
    chunks: Vec<TocChunk>,
}

/// An opened eStargz source: the TOC, checked and grouped into files.
pub struct StargzLayer {
    toc: Toc,
    source: PathBuf,
    /// The blob itself, when it is the source (to digest chunks the TOC
    /// has no digest for).
    blob: Option<File>,
    blob_id: String,
    blob_size: u64,
    /// Where the last chunk's stored range ends.
    data_end: u64,
    /// Data of `reg` entries, by entry index.
    files: HashMap<usize, FileData>,
    /// Member offsets of all data chunks, ascending.
    boundaries: Vec<u64>,
    chunk: ChunkOptions,
}

fn invalid(source: &Path, e: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("{}: {e}", source.display()))
}

impl StargzLayer {
    /// Open `opts.source` (an eStargz blob or its `stargz.index.json`),
    /// check the TOC and decide the chunk options. `blob_size` is the
    /// blob's size (`--blob-data-size`), needed when the source is the TOC.
    pub fn open(opts: &CreateOptions, blob_size: Option<u64>) -> Result<Self> {
        if opts.blob.is_some() {
            return Err(BuildError::Invalid(
                "--type estargztoc-ref writes no data blob (the eStargz layer is the blob): drop --blob".into(),
            ));
        }
        if opts.chunk_dict.is_some() {
            return Err(BuildError::Invalid(
                "--chunk-dict has no use with --type estargztoc-ref: no chunk is stored".into(),
            ));
        }
        if let Some(id) = opts.blob_id.as_deref().filter(|id| id.starts_with("sha256:")) {
            return Err(BuildError::Invalid(format!(
                "--blob-id {id}: give the layer digest's hex part, without \"sha256:\""
            )));
        }
        let source = opts.source.clone();
        if source.as_os_str() == "-" {
            return Err(invalid(&source, "--type estargztoc-ref needs a file (the eStargz blob or its TOC)"));
        }
        let mut f = crate::create::open_file(&source)?;
        let mut magic = [0u8; 2];
        let is_blob = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let (toc, blob, blob_id, blob_size, data_end) =
            if is_blob { from_blob(f, opts, blob_size)? } else { from_toc_file(opts, blob_size)? };
        let (files, boundaries) = group_files(&toc).map_err(|e| invalid(&source, e))?;
        let mut layer = Self { toc, source, blob, blob_id, blob_size, data_end, files, boundaries, chunk: opts.chunk };
        if let Some(&last) = layer.boundaries.last() {
            if last >= layer.data_end {
                return Err(invalid(
                    &layer.source,
                    format!(
                        "a chunk at offset {last:#x} lies beyond the blob's data (which ends at {:#x})",
                        layer.data_end
                    ),
                ));
            }
        }
        let chunk_size = layer.chunk_size(opts.chunk.chunk_size)?;
        layer.chunk =
            ChunkOptions { chunk_size, compressor: Compressor::Gzip, digester: Digester::Sha256, ..opts.chunk };
        if opts.chunk.compressor != Compressor::Gzip || opts.chunk.digester != Digester::Sha256 {
            tracing::debug!(
                "eStargz chunks are gzip members digested with sha256; --compressor and --digester do not apply"
            );
        }
        Ok(layer)
    }

    /// The chunk options the image is written with: gzip, sha256 and the
    /// TOC's chunk size.
    pub fn chunk_options(&self) -> ChunkOptions {
        self.chunk
    }

    /// The filesystem chunk size: the TOC's (every chunk but a file's last
    /// has it); without chunked files, `wanted` raised to fit the largest
    /// file, which is one chunk.
    fn chunk_size(&self, wanted: u32) -> Result<u32> {
        let mut full: Option<u32> = None;
        let mut largest = 0u32;
        for f in self.files.values() {
            let (last, rest) = f.chunks.split_last().expect("files with data have chunks");
            for c in rest {
                match full {
                    Some(s) if s != c.size => {
                        return Err(invalid(
                            &self.source,
                            format!("chunks of {s:#x} and {:#x} bytes: RAFS needs one chunk size", c.size),
                        ))
                    }
                    _ => full = Some(c.size),
                }
            }
            largest = largest.max(last.size);
        }
        let size = match full {
            Some(s) => {
                if !s.is_power_of_two() || !(0x1000..=0x100_0000).contains(&s) {
                    return Err(invalid(
                        &self.source,
                        format!("the TOC's chunk size {s:#x} is not a power of two from 0x1000 to 0x1000000"),
                    ));
                }
                s
            }
            None => wanted.max(largest.checked_next_power_of_two().unwrap_or(u32::MAX)),
        };
        if largest > size || size > 0x100_0000 {
            return Err(invalid(
                &self.source,
                format!("a chunk of {largest:#x} bytes is larger than the chunk size {size:#x} (RAFS chunks are at most 16 MiB)"),
            ));
        }
        Ok(size)
    }

    /// Build the layer's tree (its regular files referencing chunks of blob
    /// `blob_index`), the blob's description (`None` without file data)
    /// and statistics.
    pub fn build(self, whiteout: WhiteoutSpec, blob_index: u32) -> Result<(Tree, Option<BlobSpec>, ChunkStats)> {
        let mut tt = TarTree { t: Tree::new(implicit_dir()), whiteout };
        let mut data_of: HashMap<usize, usize> = HashMap::new(); // inode -> entry index
        let mut skipped = 0u64;
        for (i, e) in self.toc.entries.iter().enumerate() {
            if e.kind == "chunk" || toc::is_meta_entry(e.name.as_bytes()) {
                continue;
            }
            let meta = node_meta(i, e, &mut skipped).map_err(|err| invalid(&self.source, err))?;
            let name = e.name.as_bytes();
            // Names are relative to the root; a leading "/" is tolerated.
            let comps = components(e.name.trim_start_matches('/').as_bytes())?;
            if e.kind == "hardlink" {
                tt.hard_link(&comps, e.link_name.as_bytes(), name)?;
                continue;
            }
            if let Some(inode) = tt.place(&comps, meta, name)? {
                if self.files.contains_key(&i) {
                    data_of.insert(inode, i);
                }
            }
        }
        let mut tree = tt.t;
        tree.skipped_xattrs = skipped;
        // Chunks of the files the tree holds (not of replaced entries), in blob order.
        let mut refs: Vec<(u64, usize, usize)> = Vec::new(); // (offset, inode, chunk position)
        for inode in reachable_inodes(&tree) {
            if let Some(f) = data_of.get(&inode).map(|e| &self.files[e]) {
                refs.extend(f.chunks.iter().enumerate().map(|(k, c)| (c.offset, inode, k)));
            }
        }
        refs.sort_unstable();
        let mut stats = ChunkStats::default();
        let mut uoff = 0u64;
        let mut specs: HashMap<usize, Vec<Option<ChunkSpec>>> = HashMap::new();
        for (ci, &(offset, inode, k)) in refs.iter().enumerate() {
            let c = &self.files[&data_of[&inode]].chunks[k];
            let next = self.boundaries.partition_point(|&b| b <= offset);
            let end = self.boundaries.get(next).copied().unwrap_or(self.data_end);
            let mut stored = end - offset;
            // Readers tell compressed chunks by stored size != plain size.
            if stored == c.size as u64 {
                stored += 1;
            }
            let stored = u32::try_from(stored)
                .map_err(|_| invalid(&self.source, format!("the gzip member at {offset:#x} spans more than 4 GiB")))?;
            let digest = match c.digest {
                Some(d) => d,
                None => self.digest_of(offset, stored, c.size)?,
            };
            let spec = ChunkSpec {
                blob_index,
                ci_index: ci as u32,
                digest,
                flags: flags::CHUNK_COMPRESSED,
                compressed_offset: offset,
                compressed_size: stored,
                uncompressed_offset: uoff,
                uncompressed_size: c.size,
                file_offset: c.file_offset,
                crc32: 0,
            };
            uoff += (c.size as u64).div_ceil(4096) * 4096;
            let n = self.files[&data_of[&inode]].chunks.len();
            specs.entry(inode).or_insert_with(|| vec![None; n])[k] = Some(spec);
            stats.chunks += 1;
        }
        for (inode, list) in specs {
            let meta = &mut tree.inodes[inode].meta;
            stats.data_bytes += meta.size;
            meta.chunks = list.into_iter().map(|c| c.expect("every chunk of a file is placed")).collect();
        }
        if refs.len() > nydus_format::ondisk::MAX_CHUNKS_PER_BLOB as usize {
            return Err(invalid(&self.source, "more than 2^24 chunks in one blob"));
        }
        let blob = (!refs.is_empty()).then(|| BlobSpec {
            blob_id: self.blob_id.clone(),
            chunk_count: refs.len() as u32,
            compressor: Compressor::Gzip,
            digester: Digester::Sha256,
            features: flags::BLOB_ALIGNED,
            compressed_size: self.blob_size,
            uncompressed_size: uoff,
            ci_compressor: Compressor::None,
            // No ci array: the stored data ends where one would start.
            ci_offset: self.blob_size,
            ci_compressed_size: 0,
            ci_uncompressed_size: 0,
        });
        Ok((tree, blob, stats))
    }

    /// SHA-256 of a chunk the TOC gives no digest for, read from the blob.
    fn digest_of(&self, offset: u64, stored: u32, size: u32) -> Result<[u8; 32]> {
        let Some(f) = &self.blob else {
            return Err(invalid(
                &self.source,
                format!("the chunk at offset {offset:#x} has no chunkDigest: give the eStargz blob as SOURCE so it can be digested"),
            ));
        };
        let stored = (stored as u64).min(self.blob_size - offset);
        let mut buf = vec![0u8; stored as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| BuildError::io(&self.source, e))?;
        let plain = Compressor::Gzip
            .decompress(&buf, size as usize)
            .map_err(|e| invalid(&self.source, format!("chunk at offset {offset:#x}: {e}")))?;
        Ok(Digester::Sha256.digest(&plain))
    }
}

/// What a source gives: the TOC, the blob (when it is the source), the blob
/// id and size, and where the last chunk's stored range ends.
type Opened = (Toc, Option<File>, String, u64, u64);

/// The source is the eStargz blob: TOC, size and TOC offset from it.
fn from_blob(mut f: File, opts: &CreateOptions, blob_size: Option<u64>) -> Result<Opened> {
    let source = &opts.source;
    let t = toc::read_blob_toc(&mut f).map_err(|e| invalid(source, e))?;
    if let Some(s) = blob_size.filter(|&s| s != t.blob_size) {
        return Err(invalid(source, format!("--blob-data-size {s:#x} differs from the blob's {:#x}", t.blob_size)));
    }
    let id = match &opts.blob_id {
        Some(id) => id.clone(),
        None => sha256_file(&mut f, source)?,
    };
    Ok((t.toc, Some(f), id, t.blob_size, t.toc_offset))
}

/// The source is `stargz.index.json`: size and id from the options.
fn from_toc_file(opts: &CreateOptions, blob_size: Option<u64>) -> Result<Opened> {
    let source = &opts.source;
    let toc = toc::read_toc_file(source).map_err(|e| invalid(source, e))?;
    let Some(size) = blob_size else {
        return Err(invalid(
            source,
            "the source is a TOC: pass --blob-data-size with the eStargz blob's size (or give the blob itself as SOURCE)",
        ));
    };
    let Some(id) = opts.blob_id.clone() else {
        return Err(invalid(source, "the source is a TOC: pass --blob-id with the layer digest (hex)"));
    };
    if size <= LEGACY_FOOTER_SIZE {
        return Err(invalid(source, format!("--blob-data-size {size:#x} is smaller than an eStargz footer")));
    }
    // The TOC member and the footer follow the data.
    Ok((toc, None, id, size, size - LEGACY_FOOTER_SIZE))
}

/// Group the data entries of `toc` into files (a `reg` entry followed by
/// its `chunk` entries, contiguous and adding up to the file's size), and
/// list the member offsets of all of them.
fn group_files(toc: &Toc) -> std::result::Result<(HashMap<usize, FileData>, Vec<u64>), StargzError> {
    let mut files: HashMap<usize, FileData> = HashMap::new();
    let mut boundaries = Vec::new();
    let mut open: Option<usize> = None; // the reg entry still taking chunks
    let close = |open: &mut Option<usize>, files: &HashMap<usize, FileData>| -> std::result::Result<(), StargzError> {
        if let Some(r) = open.take() {
            let f = &files[&r];
            let got = f.chunks.last().map_or(0, |c| c.file_offset + c.size as u64);
            if got != f.size {
                let e = &toc.entries[r];
                return Err(entry_err(r, e, format!("its chunks cover {got} of {} bytes", f.size)));
            }
        }
        Ok(())
    };
    for (i, e) in toc.entries.iter().enumerate() {
        let data = match e.kind.as_str() {
            "reg" if e.size > 0 => true,
            "chunk" => true,
            "reg" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" => false,
            other => return Err(entry_err(i, e, format!("unknown entry type {other:?}"))),
        };
        if e.kind != "chunk" {
            close(&mut open, &files)?;
        }
        if !data {
            continue;
        }
        if e.inner_offset != 0 {
            return Err(entry_err(
                i,
                e,
                "innerOffset is set (several files share one gzip member): such blobs cannot be referenced in place; use --type estargz-rafs",
            ));
        }
        let head = open.map(|r| (&toc.entries[r], &files[&r]));
        let chunk = toc_chunk(i, e, head)?;
        boundaries.push(chunk.offset);
        if e.kind == "reg" {
            files.insert(i, FileData { size: e.size, chunks: vec![chunk] });
            open = Some(i);
        } else {
            let r = open.ok_or_else(|| entry_err(i, e, "a chunk entry that follows no regular file"))?;
            files.get_mut(&r).expect("open file").chunks.push(chunk);
        }
    }
    close(&mut open, &files)?;
    boundaries.sort_unstable();
    if let Some(w) = boundaries.windows(2).find(|w| w[0] == w[1]) {
        return Err(StargzError::Json(format!("two chunks start at the same offset {:#x}", w[0])));
    }
    Ok((files, boundaries))
}

/// The chunk described by data entry `e`: a non-empty `reg`, or a `chunk`
/// of the file `head` (its `reg` entry and the chunks so far).
fn toc_chunk(
    i: usize,
    e: &TocEntry,
    head: Option<(&TocEntry, &FileData)>,
) -> std::result::Result<TocChunk, StargzError> {
    let (size, expect_offset) = match (e.kind.as_str(), head) {
        ("reg", _) => (e.size, 0),
        (_, Some((reg, f))) => {
            if toc::normalized(e.name.as_bytes()) != toc::normalized(reg.name.as_bytes()) {
                return Err(entry_err(i, e, format!("a chunk entry following the file {:?}", reg.name)));
            }
            (f.size, f.chunks.last().map_or(0, |c| c.file_offset + c.size as u64))
        }
        _ => return Err(entry_err(i, e, "a chunk entry that follows no regular file")),
    };
    if e.chunk_offset != expect_offset {
        return Err(entry_err(
            i,
            e,
            format!(
                "chunkOffset {} where the file's chunks reach {expect_offset} (chunks must be in order, without gaps)",
                e.chunk_offset
            ),
        ));
    }
    let left = size.saturating_sub(e.chunk_offset);
    let len = if e.chunk_size == 0 { left } else { e.chunk_size };
    if len == 0 || len > left {
        return Err(entry_err(i, e, format!("chunkSize {len} does not fit the file's {size} bytes")));
    }
    let len = u32::try_from(len).map_err(|_| entry_err(i, e, format!("chunk of {len} bytes is too large")))?;
    let digest = match e.chunk_digest.as_str() {
        "" => None,
        d => Some(
            toc::parse_sha256(d).ok_or_else(|| entry_err(i, e, format!("chunkDigest {d:?} is not sha256:<64 hex>")))?,
        ),
    };
    Ok(TocChunk { offset: e.offset, file_offset: e.chunk_offset, size: len, digest })
}

/// Attributes of a non-chunk entry.
fn node_meta(i: usize, e: &TocEntry, skipped: &mut u64) -> std::result::Result<NodeSpec, StargzError> {
    let err = |reason: String| entry_err(i, e, reason);
    let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| err(format!("{what} {v} does not fit in 32 bits")));
    let (mtime, mtime_nsec) = match e.modtime.as_str() {
        "" => (0, 0),
        t => toc::parse_rfc3339(t).ok_or_else(|| err(format!("modtime {t:?} is not an RFC 3339 time")))?,
    };
    let mut xattrs = Vec::new();
    for (k, v) in &e.xattrs {
        let value = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|x| err(format!("xattr {k}: value is not base64 ({x})")))?;
        if xattr::is_supported_name(k.as_bytes()) {
            xattrs.push((k.as_bytes().to_vec(), value));
        } else {
            tracing::warn!(entry = %e.name, name = %k, "xattr namespace not supported by RAFS, skipped");
            *skipped += 1;
        }
    }
    xattrs.sort();
    let ifmt = match e.kind.as_str() {
        "dir" => libc_ifmt::S_IFDIR,
        "reg" | "hardlink" => libc_ifmt::S_IFREG,
        "symlink" => libc_ifmt::S_IFLNK,
        "char" => libc_ifmt::S_IFCHR,
        "block" => libc_ifmt::S_IFBLK,
        "fifo" => libc_ifmt::S_IFIFO,
        other => return Err(err(format!("unknown entry type {other:?}"))),
    };
    let mut meta = NodeSpec {
        mode: ifmt | (e.mode & 0o7777) as u32,
        uid: id(e.uid, "uid")?,
        gid: id(e.gid, "gid")?,
        mtime,
        mtime_nsec,
        xattrs,
        ..Default::default()
    };
    match ifmt {
        libc_ifmt::S_IFREG => meta.size = e.size,
        libc_ifmt::S_IFLNK => {
            if e.link_name.is_empty() || e.link_name.len() > 4096 {
                return Err(err("symlink target empty or longer than 4096 bytes".into()));
            }
            meta.symlink = e.link_name.as_bytes().to_vec();
            meta.size = meta.symlink.len() as u64;
        }
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => {
            meta.rdev = (id(e.dev_major, "devMajor")?, id(e.dev_minor, "devMinor")?)
        }
        _ => {}
    }
    if e.kind == "hardlink" && e.link_name.is_empty() {
        return Err(err("hard link without linkName".into()));
    }
    Ok(meta)
}

/// Inodes reachable from the root of `tree`.
fn reachable_inodes(tree: &Tree) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack = vec![0usize];
    while let Some(e) = stack.pop() {
        let inode = tree.entries[e].inode;
        if seen.insert(inode) {
            out.push(inode);
        }
        stack.extend(tree.entries[e].children.values().copied());
    }
    out
}

fn sha256_file(f: &mut File, path: &Path) -> Result<String> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(0)).map_err(|e| BuildError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| BuildError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::SourceType;
    use std::io::Write;

    const D: &str = "sha256:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4";

    fn opts(source: &Path) -> CreateOptions {
        CreateOptions {
            source: source.into(),
            source_type: SourceType::EStargzToc { blob_size: Some(100_000) },
            bootstrap: None,
            blob: None,
            blob_dir: None,
            blob_id: Some("ab".repeat(32)),
            chunk: ChunkOptions {
                chunk_size: 0x1000,
                compressor: Compressor::Zstd,
                digester: Digester::Blake3,
                threads: 1,
            },
            whiteout: WhiteoutSpec::Oci,
            parent_bootstrap: None,
            chunk_dict: None,
        }
    }

    /// Open a TOC (as JSON text) with a 100 000-byte blob and build it.
    fn build(json: &str) -> Result<(Tree, Option<BlobSpec>, ChunkStats, ChunkOptions)> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.as_bytes()).unwrap();
        let layer = StargzLayer::open(&opts(f.path()), Some(100_000))?;
        let chunk = layer.chunk_options();
        let (t, b, s) = layer.build(WhiteoutSpec::Oci, 0)?;
        Ok((t, b, s, chunk))
    }

    fn toc(entries: &str) -> String {
        format!(r#"{{"version":1,"entries":[{entries}]}}"#)
    }

    fn file<'a>(t: &'a Tree, name: &str) -> &'a NodeSpec {
        let e = t.entries[0].children[name.as_bytes()];
        &t.inode_of(e).meta
    }

    #[test]
    fn chunks_point_into_the_blob() {
        let json = toc(&format!(
            r#"{{"name":".no.prefetch.landmark","type":"reg","size":1,"offset":85,"chunkDigest":"{D}"}},
            {{"name":"./","type":"dir","mode":493,"modtime":"2021-01-02T03:04:05Z"}},
            {{"name":"./big","type":"reg","size":9000,"offset":300,"chunkSize":4096,"chunkDigest":"{D}","uid":5}},
            {{"name":"./big","type":"chunk","offset":1300,"chunkOffset":4096,"chunkSize":4096,"chunkDigest":"{D}"}},
            {{"name":"./big","type":"chunk","offset":2300,"chunkOffset":8192,"chunkDigest":"{D}"}},
            {{"name":"./hl","type":"hardlink","linkName":"./big"}},
            {{"name":"./even","type":"reg","size":4096,"offset":6396,"chunkDigest":"{D}"}},
            {{"name":"./.wh.gone","type":"reg"}},
            {{"name":"./x","type":"symlink","linkName":"big"}}"#
        ));
        let (t, blob, stats, chunk) = build(&json).unwrap();
        assert_eq!((chunk.chunk_size, chunk.compressor, chunk.digester), (4096, Compressor::Gzip, Digester::Sha256));
        let names: Vec<&[u8]> = t.entries[0].children.keys().map(|k| k.as_slice()).collect();
        assert_eq!(names, [&b"big"[..], b"even", b"hl", b"x"]); // no landmark, no whiteout
        let big = file(&t, "big");
        assert_eq!((big.uid, big.mode & 0o7777, big.chunks.len()), (5, 0, 3));
        let got: Vec<_> = big
            .chunks
            .iter()
            .map(|c| (c.ci_index, c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size))
            .collect();
        // Stored ranges run to the next member (the landmark's member is
        // one too); the uncompressed space is 4 KiB aligned.
        assert_eq!(got, [(0, 300, 1000, 0, 4096), (1, 1300, 1000, 4096, 4096), (2, 2300, 4096, 8192, 808)]);
        // A stored size equal to the plain size would read as "not
        // compressed": the range is one byte longer instead.
        let even = &file(&t, "even").chunks[0];
        assert_eq!(
            (even.compressed_offset, even.compressed_size, even.uncompressed_size),
            (6396, 100_000 - 47 - 6396, 4096)
        );
        assert!(file(&t, "even").chunks[0].flags & flags::CHUNK_COMPRESSED != 0);
        let blob = blob.unwrap();
        assert_eq!((blob.chunk_count, blob.compressed_size, blob.ci_uncompressed_size), (4, 100_000, 0));
        assert_eq!((stats.chunks, stats.data_bytes), (4, 13096));
        assert_eq!(t.inodes[t.entries[0].inode].meta.mtime, 1_609_556_645);
    }

    #[test]
    fn equal_stored_and_plain_size_gets_one_more_byte() {
        let json = toc(&format!(
            r#"{{"name":"a","type":"reg","size":100,"offset":1000,"chunkDigest":"{D}"}},
            {{"name":"b","type":"reg","size":100,"offset":1100,"chunkDigest":"{D}"}}"#
        ));
        let (t, ..) = build(&json).unwrap();
        assert_eq!(file(&t, "a").chunks[0].compressed_size, 101);
    }

    #[test]
    fn malformed_tocs_are_clear_errors() {
        let cases = [
            (toc(r#"{"name":"a","type":"socket"}"#), "unknown entry type \"socket\""),
            (
                toc(&format!(r#"{{"name":"a","type":"chunk","offset":9,"chunkOffset":4,"chunkDigest":"{D}"}}"#)),
                "follows no regular file",
            ),
            (
                toc(&format!(
                    r#"{{"name":"a","type":"reg","size":10,"offset":9,"chunkSize":4,"chunkDigest":"{D}"}},
                    {{"name":"a","type":"chunk","offset":20,"chunkOffset":5,"chunkDigest":"{D}"}}"#
                )),
                "without gaps",
            ),
            (
                toc(&format!(
                    r#"{{"name":"a","type":"reg","size":10,"offset":9,"chunkSize":4,"chunkDigest":"{D}"}},
                    {{"name":"b","type":"chunk","offset":20,"chunkOffset":4,"chunkDigest":"{D}"}}"#
                )),
                "following the file",
            ),
            (
                toc(&format!(r#"{{"name":"a","type":"reg","size":10,"offset":9,"chunkSize":4,"chunkDigest":"{D}"}}"#)),
                "cover 4 of 10",
            ),
            (
                toc(&format!(r#"{{"name":"a","type":"reg","size":10,"offset":9,"chunkSize":40,"chunkDigest":"{D}"}}"#)),
                "does not fit",
            ),
            (
                toc(&format!(
                    r#"{{"name":"a","type":"reg","size":1,"offset":9,"chunkDigest":"{D}"}},
                    {{"name":"b","type":"reg","size":1,"offset":9,"chunkDigest":"{D}"}}"#
                )),
                "same offset",
            ),
            (
                toc(&format!(r#"{{"name":"a","type":"reg","size":1,"offset":9,"innerOffset":3,"chunkDigest":"{D}"}}"#)),
                "estargz-rafs",
            ),
            (
                toc(&format!(r#"{{"name":"a","type":"reg","size":1,"offset":99999,"chunkDigest":"{D}"}}"#)),
                "beyond the blob",
            ),
            (toc(r#"{"name":"a","type":"reg","size":1,"offset":9,"chunkDigest":"sha256:12"}"#), "not sha256:<64 hex>"),
            (toc(r#"{"name":"a","type":"reg","size":1,"offset":9}"#), "no chunkDigest"),
            (
                toc(&format!(
                    r#"{{"name":"a","type":"reg","size":8192,"offset":9,"chunkSize":3000,"chunkDigest":"{D}"}},
                    {{"name":"a","type":"chunk","offset":20,"chunkOffset":3000,"chunkDigest":"{D}"}}"#
                )),
                "not a power of two",
            ),
            (toc(r#"{"name":"../x","type":"dir"}"#), "escapes the image root"),
            (toc(r#"{"name":"d","type":"dir","modtime":"yesterday"}"#), "RFC 3339"),
            (toc(r#"{"name":"d","type":"dir","uid":4294967296}"#), "32 bits"),
            (toc(r#"{"name":"d","type":"dir","xattrs":{"user.a":"!!"}}"#), "not base64"),
            (toc(r#"{"name":"l","type":"hardlink","linkName":"nowhere"}"#), "not in the archive"),
            (toc(r#"{"name":"l","type":"symlink"}"#), "symlink target"),
            (r#"{"version":1,"entries":[{"name":"a","size":-1}]}"#.into(), "invalid value"),
            ("{".into(), "not a valid TOC"),
        ];
        for (json, want) in cases {
            let e = build(&json).err().unwrap_or_else(|| panic!("{json} was accepted")).to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn mutated_tocs_never_panic() {
        let base = toc(&format!(
            r#"{{"name":"./","type":"dir"}},
            {{"name":"./d/f","type":"reg","size":9000,"offset":300,"chunkSize":4096,"chunkDigest":"{D}"}},
            {{"name":"./d/f","type":"chunk","offset":1300,"chunkOffset":4096,"chunkSize":4096,"chunkDigest":"{D}"}},
            {{"name":"./d/f","type":"chunk","offset":2300,"chunkOffset":8192,"chunkDigest":"{D}"}},
            {{"name":"./h","type":"hardlink","linkName":"./d/f"}},
            {{"name":"./c","type":"char","devMajor":1,"devMinor":3}}"#
        ));
        let numbers = ["0", "1", "4096", "4095", "9000", "18446744073709551615", "4294967296", "99999"];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Replace one number, or swap one type name.
            let mut s = base.clone();
            let digits: Vec<usize> =
                s.match_indices(':').map(|(i, _)| i + 1).filter(|&i| s.as_bytes()[i].is_ascii_digit()).collect();
            let at = digits[(x % digits.len() as u64) as usize];
            let end = at + s[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
            s.replace_range(at..end, numbers[(x >> 20) as usize % numbers.len()]);
            if x & 1 == 0 {
                let kinds = ["\"reg\"", "\"chunk\"", "\"dir\"", "\"hardlink\"", "\"fifo\""];
                let k = kinds[(x >> 8) as usize % kinds.len()];
                s = s.replacen(kinds[(x >> 12) as usize % kinds.len()], k, 1);
            }
            let _ = build(&s);
        }
    }
}
