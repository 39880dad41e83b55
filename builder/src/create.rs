//! `nydus-image create`: directory (optionally on top of a parent
//! bootstrap) → bootstrap + data blob.
//!
//! Steps: load the parent (if any) as the lower tree; walk the source into
//! an upper tree; chunk the upper layer's files into the new blob,
//! deduplicated against every chunk of the parent and of the chunk
//! dictionary; merge the upper tree onto
//! the lower one (whiteouts, spec §6.3); flatten and write the bootstrap,
//! whose blob table is the parent's, then the chunk dictionary's blobs the
//! layer references (`--chunk-dict`), then the new blob.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nydus_format::writer::{write_bootstrap, ImageSpec};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::blob::{chunk_stream, write_chunks, BlobSink, ChunkOptions, Dedup, Feeder};
use crate::chunkdict::load_chunk_dict;
use crate::dirwalk::walk;
use crate::error::{BuildError, Result};
use crate::parent::{load_parent, Parent};
use crate::stargz::StargzLayer;
use crate::tarball::{attach_chunks, read_tar, TarCompression};
use crate::tree::{Tree, WhiteoutSpec};

/// What the source of a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceType {
    /// A directory (`dir-rafs`).
    #[default]
    Dir,
    /// An uncompressed OCI layer tar, a file or `-` for stdin (`tar-rafs`).
    Tar,
    /// A gzip-compressed OCI layer tar, a file or `-` (`targz-rafs`).
    TarGz,
    /// An eStargz layer blob, converted like a tar.gz without its TOC and
    /// landmark entries (`estargz-rafs`).
    EStargz,
    /// An eStargz layer referenced in place: the source is the blob or its
    /// `stargz.index.json`, and no blob is written (`estargztoc-ref`, see
    /// [`crate::stargz`]). `blob_size`: the blob's size, needed with a TOC.
    EStargzToc {
        /// `--blob-data-size`.
        blob_size: Option<u64>,
    },
}

/// Options of one build.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Source directory, or tar file (`-`: stdin) for tar sources.
    pub source: PathBuf,
    /// Kind of source.
    pub source_type: SourceType,
    /// Bootstrap output (default: named by its SHA-256 inside `blob_dir`).
    pub bootstrap: Option<PathBuf>,
    /// Blob output file (or FIFO).
    pub blob: Option<PathBuf>,
    /// Directory receiving the blob named by its id.
    pub blob_dir: Option<PathBuf>,
    /// Blob id override.
    pub blob_id: Option<String>,
    /// Chunking options.
    pub chunk: ChunkOptions,
    /// Whiteout handling.
    pub whiteout: WhiteoutSpec,
    /// Bootstrap of the lower layers this build goes on top of.
    pub parent_bootstrap: Option<PathBuf>,
    /// Bootstrap whose chunks are referenced instead of stored again.
    pub chunk_dict: Option<PathBuf>,
}

/// What a build produced (also the `--output-json` document).
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    /// Bootstrap path.
    pub bootstrap: PathBuf,
    /// Blob ids, in blob-table order (a parent's blobs first).
    pub blobs: Vec<String>,
    /// Blob file sizes, in blob-table order.
    pub blob_sizes: Vec<u64>,
    /// Paths of the blob files this build wrote.
    pub blob_paths: Vec<PathBuf>,
    /// RAFS version.
    pub fs_version: u32,
    /// Chunk compressor.
    pub compressor: String,
    /// Chunk digester.
    pub digester: String,
    /// Chunk size.
    pub chunk_size: u32,
    /// Names in the tree (incl. the root and every hard-link name).
    pub inodes: u64,
    /// Regular file inodes.
    pub files: u64,
    /// Chunks cut from the source's files.
    pub chunks: u64,
    /// Of those, chunks deduplicated (within the source or against the parent).
    pub dedup_chunks: u64,
    /// Plain bytes of the source's file data.
    pub data_bytes: u64,
    /// Bootstrap size.
    pub bootstrap_size: u64,
}

fn check_dir(dir: &Path, what: &str) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(BuildError::Invalid(format!("{what} {}: not a directory", dir.display()))),
        Err(e) => Err(BuildError::Invalid(format!("{what} {}: {e}; create it first", dir.display()))),
    }
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn is_fifo(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

const NO_BLOB_OUTPUT: &str = "the source has file data but no blob output: pass --blob FILE or --blob-dir DIR";

/// Open the blob sink of `out` (`None` when there is no blob output).
fn open_sink(out: &BlobOut) -> Result<Option<BlobSink>> {
    Ok(match out {
        BlobOut::Temp(t, _) => {
            let f = t.reopen().map_err(|e| BuildError::io(t.path(), e))?;
            Some(BlobSink::new(f, t.path()))
        }
        BlobOut::Fifo(p) => {
            let f = OpenOptions::new().write(true).open(p).map_err(|e| BuildError::io(p, e))?;
            Some(BlobSink::new(f, p))
        }
        BlobOut::None => None,
    })
}

enum BlobOut {
    Temp(tempfile::NamedTempFile, PathBuf),
    Fifo(PathBuf),
    None,
}

/// Build an image into temporary files next to their destinations.
pub fn create(opts: &CreateOptions, progress: &(dyn Fn(u64, u64, u64) + Sync)) -> Result<Staged> {
    if opts.bootstrap.is_none() && opts.blob_dir.is_none() {
        return Err(BuildError::Invalid("no bootstrap output: pass --bootstrap FILE (or --blob-dir DIR)".into()));
    }
    if let Some(id) = &opts.blob_id {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BuildError::Invalid(format!("--blob-id {id:?}: must be 1..=64 printable ASCII characters")));
        }
    }
    if let Some(b) = &opts.bootstrap {
        check_dir(&parent_of(b), "bootstrap directory")?;
        if b.is_dir() {
            return Err(BuildError::Invalid(format!("bootstrap {}: is a directory; give a file name", b.display())));
        }
    }
    if let Some(d) = &opts.blob_dir {
        check_dir(d, "blob directory")?;
    }
    if let Some(b) = &opts.blob {
        check_dir(&parent_of(b), "blob directory")?;
    }
    // An eStargz TOC dictates the chunk format: gzip members, sha256, its chunk size.
    let mut stargz = match opts.source_type {
        SourceType::EStargzToc { blob_size } => Some(StargzLayer::open(opts, blob_size)?),
        _ => None,
    };
    let opts = &CreateOptions { chunk: stargz.as_ref().map_or(opts.chunk, |s| s.chunk_options()), ..opts.clone() };
    let parent = opts.parent_bootstrap.as_deref().map(|p| load_parent(p, &opts.chunk)).transpose()?;
    // Without a parent, overlayfs whiteouts are kept as they are.
    let whiteout = match (&parent, opts.whiteout) {
        (None, WhiteoutSpec::Overlayfs) => WhiteoutSpec::None,
        (_, w) => w,
    };
    let (dedup_known, mut blobs, blob_index) = match &parent {
        Some(p) => (p.chunks.clone(), p.blobs.clone(), p.blobs.len() as u32),
        None => (Default::default(), Vec::new(), 0),
    };
    let dict = opts.chunk_dict.as_deref().map(|p| load_chunk_dict(p, &opts.chunk)).transpose()?;
    let mut dedup = Dedup { known: dedup_known, blob_index };
    if let Some(d) = &dict {
        dedup.blob_index += d.add_known(&blobs, &mut dedup.known);
    }
    let (mut upper, out, blob, stats) = match opts.source_type {
        SourceType::Dir => {
            let mut upper = walk(&opts.source, whiteout)?;
            let data = upper.data_files();
            let (total, files) = (data.iter().map(|f| f.size).sum::<u64>(), data.len() as u64);
            tracing::info!(entries = upper.entries.len(), files, bytes = total, "source tree walked");
            let out = match (&opts.blob, &opts.blob_dir) {
                (Some(b), _) if is_fifo(b) => BlobOut::Fifo(b.clone()),
                (Some(b), _) => BlobOut::Temp(temp_in(&parent_of(b))?, b.clone()),
                (None, Some(d)) => BlobOut::Temp(temp_in(d)?, d.clone()),
                (None, None) if total == 0 => BlobOut::None,
                (None, None) => return Err(BuildError::Invalid(NO_BLOB_OUTPUT.into())),
            };
            let done = std::sync::atomic::AtomicU64::new(0);
            let tick = |n: u64| {
                let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                progress(d, total, files);
            };
            let (blob, stats) = match open_sink(&out)? {
                Some(sink) => write_chunks(&mut upper, &dedup, &opts.chunk, sink, &tick)?,
                None => (None, Default::default()),
            };
            (upper, out, blob, stats)
        }
        SourceType::EStargzToc { .. } => {
            let layer = stargz.take().expect("opened above");
            let (upper, spec, stats) = layer.build(whiteout, dedup.blob_index)?;
            tracing::info!(entries = upper.entries.len(), chunks = stats.chunks, "eStargz TOC read");
            (upper, BlobOut::None, spec.map(|s| (s.clone(), s.blob_id)), stats)
        }
        SourceType::Tar | SourceType::TarGz | SourceType::EStargz => {
            let compression = match opts.source_type {
                SourceType::TarGz => TarCompression::Gzip,
                SourceType::EStargz => TarCompression::EStargz,
                _ => TarCompression::None,
            };
            let (input, src): (Box<dyn Read + Send>, String) = if opts.source.as_os_str() == "-" {
                (Box::new(std::io::stdin()), "stdin".into())
            } else {
                let f = open_file(&opts.source)?;
                if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(BuildError::Unsupported {
                        path: opts.source.clone(),
                        reason: "is a directory; a tar source must be a file or -".into(),
                    });
                }
                (Box::new(f), opts.source.display().to_string())
            };
            // The data size is only known at the end of the stream: without a
            // blob output, chunks go to a scratch file next to the bootstrap
            // and any data is an error.
            let (out, scratch) = match (&opts.blob, &opts.blob_dir, &opts.bootstrap) {
                (Some(b), _, _) if is_fifo(b) => (BlobOut::Fifo(b.clone()), false),
                (Some(b), _, _) => (BlobOut::Temp(temp_in(&parent_of(b))?, b.clone()), false),
                (None, Some(d), _) => (BlobOut::Temp(temp_in(d)?, d.clone()), false),
                (None, None, Some(b)) => (BlobOut::Temp(temp_in(&parent_of(b))?, PathBuf::new()), true),
                (None, None, None) => unreachable!("checked above"),
            };
            let done = std::sync::atomic::AtomicU64::new(0);
            let tick = |n: u64| {
                let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                progress(d, d, 0);
            };
            let sink = open_sink(&out)?.expect("tar sources always have a sink");
            let feed = |f: &mut Feeder| read_tar(input, compression, &src, whiteout, f);
            let (mut upper, chunks, blob, stats) = chunk_stream(feed, &dedup, &opts.chunk, sink, &tick)?;
            attach_chunks(&mut upper, chunks);
            if scratch && blob.is_some() {
                return Err(BuildError::Invalid(NO_BLOB_OUTPUT.into()));
            }
            tracing::info!(entries = upper.entries.len(), bytes = stats.data_bytes, "tar source read");
            (upper, if scratch { BlobOut::None } else { out }, blob, stats)
        }
    };
    // The dictionary blobs the layer uses join the table; the own blob follows them.
    let own_index = match &dict {
        Some(d) => d.settle(&mut upper, &mut blobs, dedup.blob_index),
        None => dedup.blob_index,
    };
    let mut new_blob = false;
    if let Some((mut spec, _)) = blob {
        if let Some(o) = &opts.blob_id {
            spec.blob_id = o.clone();
        }
        match blobs.iter().position(|b| b.blob_id == spec.blob_id) {
            // Byte-identical to a parent blob (same SHA-256, e.g. data deleted
            // by one layer and added again by this one): its chunks are that
            // blob's chunks, at the same places.
            Some(i) if opts.blob_id.is_none() && blobs[i] == spec => remap_blob(&mut upper, own_index, i as u32),
            Some(_) => {
                return Err(BuildError::Invalid(format!(
                "blob id {} is already used by the parent bootstrap or the chunk dictionary; choose another --blob-id",
                spec.blob_id
            )))
            }
            None => {
                blobs.push(spec);
                new_blob = true;
            }
        }
    }
    let merged = merge_layers(parent, upper);
    let spec = ImageSpec {
        chunk_size: opts.chunk.chunk_size,
        compressor: opts.chunk.compressor,
        digester: opts.chunk.digester,
        nodes: merged.to_nodes(),
        blobs: blobs.clone(),
        prefetch: Vec::new(),
    };
    let inodes = spec.nodes.len() as u64;
    let files =
        spec.nodes.iter().filter(|n| n.link_to.is_none() && n.mode & libc::S_IFMT == libc::S_IFREG).count() as u64;
    let boot = write_bootstrap(&spec).map_err(|e| BuildError::Invalid(format!("cannot write bootstrap: {e}")))?;
    let boot_path = match &opts.bootstrap {
        Some(p) => p.clone(),
        None => opts.blob_dir.as_ref().expect("checked").join(hex::encode(Sha256::digest(&boot))),
    };
    let mut boot_tmp = temp_in(&parent_of(&boot_path))?;
    boot_tmp.write_all(&boot).map_err(|e| BuildError::io(boot_tmp.path(), e))?;
    boot_tmp.as_file().sync_all().map_err(|e| BuildError::io(boot_tmp.path(), e))?;
    let mut blob_paths = Vec::new();
    let blob_tmp = match out {
        BlobOut::Temp(t, dest) => match blobs.last().filter(|_| new_blob) {
            Some(b) => {
                let dest = if opts.blob.is_some() { dest } else { dest.join(&b.blob_id) };
                blob_paths.push(dest.clone());
                Some((t, dest))
            }
            None => None, // no data: the empty temporary file is removed on drop
        },
        BlobOut::Fifo(p) => {
            blob_paths.push(p);
            None
        }
        BlobOut::None => None,
    };
    let report = CreateReport {
        bootstrap: boot_path.clone(),
        blobs: blobs.iter().map(|b| b.blob_id.clone()).collect(),
        blob_sizes: blobs.iter().map(|b| b.compressed_size).collect(),
        blob_paths,
        fs_version: 6,
        compressor: opts.chunk.compressor.name().into(),
        digester: opts.chunk.digester.name().into(),
        chunk_size: opts.chunk.chunk_size,
        inodes,
        files,
        chunks: stats.chunks,
        dedup_chunks: stats.dedup_chunks,
        data_bytes: stats.data_bytes,
        bootstrap_size: boot.len() as u64,
    };
    Ok(Staged { report, blob: blob_tmp, boot: (boot_tmp, boot_path) })
}

/// Point chunks of blob `from` at blob `to` (an identical blob).
fn remap_blob(tree: &mut Tree, from: u32, to: u32) {
    for c in tree.inodes.iter_mut().flat_map(|i| i.meta.chunks.iter_mut()) {
        if c.blob_index == from {
            c.blob_index = to;
        }
    }
}

/// The image tree: the upper layer alone, or merged onto the parent's tree.
fn merge_layers(parent: Option<Parent>, upper: Tree) -> Tree {
    match parent {
        Some(mut p) => {
            p.tree.merge(&upper);
            p.tree
        }
        None => upper,
    }
}

/// A finished build whose outputs still sit in temporary files. Dropping it
/// removes them; [`Staged::publish`] gives them their final names.
pub struct Staged {
    /// What was built.
    pub report: CreateReport,
    blob: Option<(tempfile::NamedTempFile, PathBuf)>,
    boot: (tempfile::NamedTempFile, PathBuf),
}

impl Staged {
    /// Rename the blob, then the bootstrap, into place. If the bootstrap
    /// cannot be placed, a blob placed by this call is removed again.
    pub fn publish(self) -> Result<CreateReport> {
        let mut placed_blob = None;
        if let Some((t, dest)) = self.blob {
            let existed = dest.exists();
            publish(t, &dest)?;
            if !existed {
                placed_blob = Some(dest);
            }
        }
        let (t, dest) = self.boot;
        if let Err(e) = publish(t, &dest) {
            if let Some(b) = placed_blob {
                let _ = fs::remove_file(b);
            }
            return Err(e);
        }
        Ok(self.report)
    }
}

/// Give a finished temporary file its final name and ordinary permissions
/// (0644: images are meant to be shared).
pub fn publish(t: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    t.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(|e| BuildError::io(t.path(), e))?;
    t.persist(dest).map_err(|e| BuildError::io(dest, e.error))?;
    Ok(())
}

/// A temporary file in `dir`, removed unless published. Errors name `dir`
/// and the OS cause, not the random temporary name.
pub fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().prefix(".nydus-tmp-").tempfile_in(dir).map_err(|e| {
        let os = e.raw_os_error().or_else(|| {
            let inner = e.get_ref()?;
            inner.source()?.downcast_ref::<std::io::Error>()?.raw_os_error()
        });
        let e = match os {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::from(e.kind()),
        };
        BuildError::io(dir, e)
    })
}

/// Open an existing file for reading, naming it in errors.
pub fn open_file(p: &Path) -> Result<File> {
    File::open(p).map_err(|e| BuildError::io(p, e))
}
