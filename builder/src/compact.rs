//! `nydus-image compact`: fewer, fuller blobs for an image.
//!
//! Images built layer on layer keep every lower blob, even when upper
//! layers deleted or replaced most of its files. Compaction reads which
//! chunks the bootstrap still references, decides per blob
//! ([`crate::compact_plan`]) and then:
//! * copies the still-used chunks of each blob to rewrite, and of each
//!   group of small blobs to merge, into a new native blob (stored bytes
//!   copied as they are, each verified against its digest first; chunk
//!   table and blob meta header as `create` writes them; named by its
//!   SHA-256) in the blob directory;
//! * writes a new bootstrap: the same tree, its chunks pointing into the
//!   new blobs, blobs nothing references any more left out of the table.
//!
//! Blobs kept keep their ids and files. Source blobs are never deleted:
//! other images may still use them. A chunk needed by the tree is only
//! ever moved, never dropped: a chunk that cannot be read or does not
//! match its digest stops the run before any new blob or bootstrap is
//! published (new blobs get their names only once all are complete).
//!
//! When the plan changes nothing, the output bootstrap is a byte copy of
//! the input; when the image has fewer blobs than `layers_to_compact`,
//! nothing is written (upstream's behaviour, which nydusify relies on).
//! RAFS v5 images can be compacted only in that no-op sense: the rewritten
//! bootstrap would have to be v6, so a real compaction is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nydus_format::blob_meta::ChunkLocation;
use nydus_format::ondisk::MAX_CHUNKS_PER_BLOB;
use nydus_format::reader::{detect_version, BlobInfo, Bootstrap};
use nydus_format::writer::{write_bootstrap, BlobSpec, ChunkSpec, ImageSpec, NodeSpec};
use nydus_format::{flags, Digest};
use nydus_storage::backend::{check_blob_id, read_full, BlobBackend, BlobReader};
use serde::Serialize;
use serde_json::Value;
use tempfile::NamedTempFile;

use crate::blob::{seal_blob, BlobSink, ChunkOptions};
use crate::chunkdict::load_chunk_dict;
use crate::compact_plan::{plan, BlobUsage, Fate, Plan, Thresholds};
use crate::create::{publish, temp_in};
use crate::error::{BuildError, Result};
use crate::image::load;
use crate::parent::{blob_spec, load_tree};
use crate::tree::Tree;

/// Upstream's default `compact_blob_size`: 10 MiB.
pub const DEFAULT_COMPACT_BLOB_SIZE: u64 = 10 << 20;
/// Upstream's default `max_compact_size`: 100 MiB.
pub const DEFAULT_MAX_COMPACT_SIZE: u64 = 100 << 20;

/// The settings of upstream's `compact.json`; absent keys take upstream's
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    /// Rewrite blobs whose used ratio (stored bytes of referenced chunks /
    /// blob data size) is below this percentage; 0 (default) disables it.
    /// Leave it 0 when blobs are shared with other images (e.g. a build
    /// cache): a rewritten blob is no longer shared.
    pub min_used_ratio: u8,
    /// Merge blobs smaller than this (bytes; default 10 MiB).
    pub compact_blob_size: u64,
    /// A merged blob holds at most this many bytes of chunk data (default
    /// 100 MiB).
    pub max_compact_size: u64,
    /// Compact only images with at least this many blobs; 0 (default):
    /// always.
    pub layers_to_compact: usize,
    /// Where the source blobs are (by id) and the new blobs go.
    pub blobs_dir: Option<PathBuf>,
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            min_used_ratio: 0,
            compact_blob_size: DEFAULT_COMPACT_BLOB_SIZE,
            max_compact_size: DEFAULT_MAX_COMPACT_SIZE,
            layers_to_compact: 0,
            blobs_dir: None,
        }
    }
}

const CONFIG_KEYS: [&str; 5] =
    ["min_used_ratio", "compact_blob_size", "max_compact_size", "layers_to_compact", "blobs_dir"];

fn config_error(origin: &str, m: String) -> BuildError {
    BuildError::Invalid(format!("compact config {origin}: {m}"))
}

/// A non-negative integer value of `key`, at most `max`.
fn int_of(origin: &str, key: &str, v: &Value, max: u64, what: &str) -> Result<u64> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(config_error(origin, format!("\"{key}\" must be {what}, got {v}"))),
    }
}

impl CompactConfig {
    /// Parse `compact.json` text (`origin` names it in messages). Unknown
    /// keys are returned as warnings; a value of the wrong type is an error.
    pub fn from_json(text: &str, origin: &str) -> Result<(Self, Vec<String>)> {
        let v: Value = serde_json::from_str(text).map_err(|e| config_error(origin, format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| {
            config_error(origin, format!("expected a JSON object with the keys {}", CONFIG_KEYS.join(", ")))
        })?;
        let mut cfg = Self::default();
        let mut warnings = Vec::new();
        for (key, val) in obj {
            match key.as_str() {
                "min_used_ratio" => {
                    cfg.min_used_ratio = int_of(origin, key, val, 100, "a percentage from 0 to 100")? as u8
                }
                "compact_blob_size" => {
                    cfg.compact_blob_size = int_of(origin, key, val, u64::MAX, "a size in bytes (an integer)")?
                }
                "max_compact_size" => {
                    cfg.max_compact_size = int_of(origin, key, val, u64::MAX, "a size in bytes (an integer)")?
                }
                "layers_to_compact" => {
                    cfg.layers_to_compact =
                        int_of(origin, key, val, usize::MAX as u64, "a number of blobs (an integer)")? as usize
                }
                "blobs_dir" => match val.as_str() {
                    Some("") => cfg.blobs_dir = None,
                    Some(s) => cfg.blobs_dir = Some(PathBuf::from(s)),
                    None => {
                        return Err(config_error(origin, format!("\"blobs_dir\" must be a path string, got {val}")))
                    }
                },
                _ => warnings.push(format!(
                    "compact config {origin}: unknown key \"{key}\" ignored (known keys: {})",
                    CONFIG_KEYS.join(", ")
                )),
            }
        }
        Ok((cfg, warnings))
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            min_used_ratio: self.min_used_ratio,
            compact_blob_size: self.compact_blob_size,
            max_compact_size: self.max_compact_size,
            layers_to_compact: self.layers_to_compact,
        }
    }
}

/// What to compact and where the results go.
pub struct CompactOptions {
    /// The image's bootstrap.
    pub bootstrap: PathBuf,
    /// Where to write the compacted bootstrap.
    pub output_bootstrap: PathBuf,
    /// Thresholds and the blob directory (`blobs_dir` is required).
    pub config: CompactConfig,
    /// A chunk dictionary whose blobs are shared and so never rewritten.
    pub chunk_dict: Option<PathBuf>,
    /// Where to read source blobs missing from the blob directory.
    pub backend: Option<Arc<dyn BlobBackend>>,
}

/// What a compaction did (also the `--output-json` document).
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// The bootstrap written; `None` when the image has fewer blobs than
    /// `layers_to_compact` (nothing written).
    pub bootstrap: Option<PathBuf>,
    /// Did the blob table change?
    pub compacted: bool,
    /// Blob ids of the output, in blob-table order (of the input when
    /// nothing was written).
    pub blobs: Vec<String>,
    /// Their sizes.
    pub blob_sizes: Vec<u64>,
    /// Blobs in the input's table.
    pub blobs_before: usize,
    /// Blobs in the output's table.
    pub blobs_after: usize,
    /// Total size of the input's blobs.
    pub bytes_before: u64,
    /// Total size of the output's blobs.
    pub bytes_after: u64,
    /// Blobs written by this run.
    pub new_blobs: Vec<String>,
    /// Input blobs whose used chunks moved to new blobs.
    pub rewritten_blobs: Vec<String>,
    /// Input blobs left out because nothing referenced them.
    pub dropped_blobs: Vec<String>,
    /// Chunks copied into new blobs.
    pub copied_chunks: u64,
    /// Stored bytes copied.
    pub copied_bytes: u64,
    /// Chunks not copied because an identical chunk was already in the
    /// output (a kept blob or an earlier new blob).
    pub dedup_chunks: u64,
    /// RAFS version of the input.
    pub fs_version: u32,
    /// Filesystem compressor.
    pub compressor: String,
    /// Chunk digester.
    pub digester: String,
    /// Chunk size.
    pub chunk_size: u32,
}

/// Progress callback: stored bytes copied so far, bytes to copy in all.
pub type CopyProgress<'a> = &'a dyn Fn(u64, u64);

/// Compact the image of `opts` (see the module documentation).
pub fn compact(opts: &CompactOptions, progress: CopyProgress) -> Result<CompactReport> {
    let dir = opts.config.blobs_dir.clone().ok_or_else(|| {
        BuildError::Invalid(
            "no blob directory: pass --blob-dir DIR (or \"blobs_dir\" in --config); source blobs are read from it \
             and the new blobs written to it"
                .into(),
        )
    })?;
    if !dir.is_dir() {
        return Err(BuildError::Invalid(format!("blob directory {}: not a directory", dir.display())));
    }
    let raw = std::fs::read(&opts.bootstrap).map_err(|e| BuildError::io(&opts.bootstrap, e))?;
    let fs_version = detect_version(&raw).unwrap_or(6);
    let boot = load(&opts.bootstrap)?;
    let mut tree = load_tree(&boot).map_err(|e| BuildError::format(&opts.bootstrap, e))?;
    let mut sources = Sources { dir: &dir, backend: opts.backend.as_ref(), open: HashMap::new() };
    let pinned = pinned_blobs(opts, &boot)?;
    let used = used_chunks(&tree);
    let usage = blob_usage(&boot, &used, &pinned, &mut sources)?;
    let plan = plan(&usage, &opts.config.thresholds());
    let mut report = CompactReport::before(&boot, fs_version);
    log_plan(&boot, &usage, &plan);
    if plan.too_few_blobs {
        tracing::info!(
            blobs = boot.blobs.len(),
            layers_to_compact = opts.config.layers_to_compact,
            "fewer blobs than layers_to_compact: not compacted, no bootstrap written"
        );
        return Ok(report);
    }
    if plan.is_noop() {
        write_out(&opts.output_bootstrap, &raw)?;
        report.bootstrap = Some(opts.output_bootstrap.clone());
        return Ok(report);
    }
    writable(fs_version, &opts.bootstrap)?;
    // Every source must be at hand before the first new blob is written.
    for (b, _) in boot.blobs.iter().zip(&plan.fates).filter(|(_, f)| matches!(f, Fate::Rewrite(_))) {
        sources.get(b)?;
    }
    let mut copier = Copier::new(&boot, &plan, &used, &dir, &mut sources, progress);
    let mut staged = Vec::new();
    let mut new_blobs = Vec::new();
    for (k, g) in plan.groups.iter().enumerate() {
        let blob = copier.write_group(k, g)?;
        new_blobs.push(blob.as_ref().map(|(spec, _)| spec.clone()));
        staged.extend(blob);
    }
    let (remap, stats) = (copier.remap, copier.stats);
    // All copies succeeded: only now do the new blobs get their names.
    for (spec, t) in staged {
        publish(t, &dir.join(&spec.blob_id))?;
        tracing::info!(blob = %spec.blob_id, chunks = spec.chunk_count, size = spec.compressed_size, "new blob written");
    }
    let (table, index_of) = new_table(&boot, &plan, &new_blobs)?;
    repoint(&mut tree, &plan, &remap, &index_of);
    let nodes = tree.to_nodes();
    let spec = ImageSpec {
        chunk_size: boot.sb.chunk_size,
        compressor: boot.sb.compressor,
        digester: boot.sb.digester,
        prefetch: prefetch_nodes(&boot, &nodes)?,
        nodes,
        blobs: table,
    };
    let bytes = write_bootstrap(&spec).map_err(|e| BuildError::Invalid(format!("cannot write bootstrap: {e}")))?;
    write_out(&opts.output_bootstrap, &bytes)?;
    report.after(&boot, &plan, &spec.blobs, &new_blobs, stats);
    report.bootstrap = Some(opts.output_bootstrap.clone());
    Ok(report)
}

/// Refuse to rewrite a RAFS v5 bootstrap: the result would be v6.
fn writable(fs_version: u32, path: &Path) -> Result<()> {
    if fs_version == 5 {
        return Err(BuildError::Invalid(format!(
            "{}: a RAFS v5 image; compacting it means writing a new bootstrap, and this nydus-image writes only \
             RAFS v6: rebuild the image as v6 (nydus-image create --fs-version 6) and compact that",
            path.display()
        )));
    }
    Ok(())
}

/// Indexes of the blobs that must not be rewritten: those of the chunk
/// dictionary (shared with other images).
fn pinned_blobs<B: AsRef<[u8]>>(opts: &CompactOptions, boot: &Bootstrap<B>) -> Result<HashSet<usize>> {
    let Some(d) = &opts.chunk_dict else {
        return Ok(HashSet::new());
    };
    let chunk = ChunkOptions {
        chunk_size: boot.sb.chunk_size,
        compressor: boot.sb.compressor,
        digester: boot.sb.digester,
        threads: 1,
    };
    let ids: HashSet<String> = load_chunk_dict(d, &chunk)?.blobs.into_iter().map(|b| b.blob_id).collect();
    Ok(boot.blobs.iter().enumerate().filter(|(_, b)| ids.contains(&b.blob_id)).map(|(i, _)| i).collect())
}

/// Every distinct chunk the tree references, by (blob index, ci index),
/// with its position in that file's chunk list zeroed.
fn used_chunks(tree: &Tree) -> BTreeMap<(u32, u32), ChunkSpec> {
    let mut used = BTreeMap::new();
    for c in tree.inodes.iter().flat_map(|n| n.meta.chunks.iter()) {
        used.entry((c.blob_index, c.ci_index)).or_insert(ChunkSpec { file_offset: 0, ..*c });
    }
    used
}

/// Bytes of chunk data in blob `b`: up to its chunk table, or its size.
fn recorded_data_size(b: &BlobInfo) -> Option<u64> {
    if b.ci_uncompressed_size > 0 && b.ci_offset > 0 && b.ci_offset <= b.compressed_size {
        Some(b.ci_offset)
    } else {
        (b.compressed_size > 0).then_some(b.compressed_size)
    }
}

fn blob_usage<B: AsRef<[u8]>>(
    boot: &Bootstrap<B>,
    used: &BTreeMap<(u32, u32), ChunkSpec>,
    pinned: &HashSet<usize>,
    sources: &mut Sources,
) -> Result<Vec<BlobUsage>> {
    let mut usage: Vec<BlobUsage> = boot
        .blobs
        .iter()
        .enumerate()
        .map(|(i, b)| BlobUsage {
            data_size: recorded_data_size(b).unwrap_or(0),
            used_bytes: 0,
            referenced: false,
            movable: !pinned.contains(&i),
            merge_key: b.compressor.id(),
        })
        .collect();
    for c in used.values() {
        let u = &mut usage[c.blob_index as usize];
        u.used_bytes += c.compressed_size as u64;
        u.referenced = true;
    }
    for (i, b) in boot.blobs.iter().enumerate() {
        let u = &mut usage[i];
        if !u.movable || !u.referenced {
            continue;
        }
        if let Err(m) = b.data_supported() {
            tracing::warn!(blob = %b.blob_id, "kept as it is: {m}");
            u.movable = false;
        } else if u.data_size == 0 {
            // No size recorded (e.g. merged with --blob-sizes 0): ask the source.
            match sources.size(b) {
                Ok(s) => u.data_size = s,
                Err(e) => {
                    tracing::warn!(blob = %b.blob_id, "kept as it is: its size is unknown ({e})");
                    u.movable = false;
                }
            }
        }
    }
    Ok(usage)
}

fn log_plan<B: AsRef<[u8]>>(boot: &Bootstrap<B>, usage: &[BlobUsage], plan: &Plan) {
    for (i, (b, u)) in boot.blobs.iter().zip(usage).enumerate() {
        let ratio = u.used_bytes.saturating_mul(100).checked_div(u.data_size).unwrap_or(100);
        let fate = match plan.fates[i] {
            Fate::Keep => "kept".to_string(),
            Fate::Drop => "dropped: no chunk of it is referenced".to_string(),
            Fate::Rewrite(k) if plan.groups[k].len() > 1 => format!("merged into new blob {k}"),
            Fate::Rewrite(k) => format!("rewritten as new blob {k}"),
        };
        tracing::info!(blob = %b.blob_id, data_size = u.data_size, used_bytes = u.used_bytes, used_ratio = ratio, "{fate}");
    }
}

/// Where source blobs are read: `dir/<id>` first, else the backend.
struct Sources<'a> {
    dir: &'a Path,
    backend: Option<&'a Arc<dyn BlobBackend>>,
    open: HashMap<String, Source>,
}

enum Source {
    File(File, PathBuf),
    Backend(Arc<dyn BlobReader>),
}

impl Sources<'_> {
    fn get(&mut self, b: &BlobInfo) -> Result<&Source> {
        if !self.open.contains_key(&b.blob_id) {
            let s = self.open_source(b)?;
            self.open.insert(b.blob_id.clone(), s);
        }
        Ok(&self.open[&b.blob_id])
    }

    fn open_source(&self, b: &BlobInfo) -> Result<Source> {
        check_blob_id(&b.blob_id).map_err(|e| BuildError::Invalid(e.to_string()))?;
        let path = self.dir.join(&b.blob_id);
        match File::open(&path) {
            Ok(f) => return Ok(Source::File(f, path)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(BuildError::io(&path, e)),
            Err(_) => {}
        }
        match self.backend {
            Some(be) => be.open_blob(&b.blob_id).map(Source::Backend).map_err(|e| {
                BuildError::Invalid(format!("blob {} is not in {} and {e}", b.blob_id, self.dir.display()))
            }),
            None => Err(BuildError::Invalid(format!(
                "blob {} is needed (its chunks are copied) but {} does not exist: put the image's blobs in the \
                 blob directory (--blob-dir, \"blobs_dir\"), or read them from a backend with --backend-type and \
                 --backend-config",
                b.blob_id,
                path.display()
            ))),
        }
    }

    fn size(&mut self, b: &BlobInfo) -> Result<u64> {
        match self.get(b)? {
            Source::File(f, p) => f.metadata().map(|m| m.len()).map_err(|e| BuildError::io(p, e)),
            Source::Backend(r) => r.blob_size().map_err(|e| BuildError::Invalid(format!("blob {}: {e}", b.blob_id))),
        }
    }

    fn read(&mut self, b: &BlobInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.get(b)? {
            Source::File(f, p) => f.read_exact_at(buf, offset).map_err(|e| {
                let e = match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => std::io::Error::other("blob ends before the chunk does"),
                    _ => e,
                };
                BuildError::io(p, e)
            }),
            Source::Backend(r) => read_full(r.as_ref(), &b.blob_id, buf, offset)
                .map_err(|e| BuildError::Invalid(format!("blob {}: {e}", b.blob_id))),
        }
    }
}

/// Counters of the copy.
#[derive(Debug, Clone, Copy, Default)]
struct CopyStats {
    chunks: u64,
    bytes: u64,
    dedup: u64,
}

/// A new blob: its description, or `None` when all its chunks were found
/// elsewhere in the output.
type NewBlob = Option<BlobSpec>;

/// Blob indexes while copying: kept blob `i` is `i`, new blob `k` is
/// `blobs + k`; [`new_table`] turns them into final indexes.
struct Copier<'a, 's, B: AsRef<[u8]>> {
    boot: &'a Bootstrap<B>,
    used: &'a BTreeMap<(u32, u32), ChunkSpec>,
    dir: &'a Path,
    sources: &'a mut Sources<'s>,
    progress: CopyProgress<'a>,
    /// Chunks of the output by (digest, plain size).
    known: HashMap<(Digest, u32), ChunkSpec>,
    /// Where each moved chunk is now.
    remap: HashMap<(u32, u32), ChunkSpec>,
    stats: CopyStats,
    done: u64,
    total: u64,
}

impl<'a, 's, B: AsRef<[u8]>> Copier<'a, 's, B> {
    fn new(
        boot: &'a Bootstrap<B>,
        plan: &Plan,
        used: &'a BTreeMap<(u32, u32), ChunkSpec>,
        dir: &'a Path,
        sources: &'a mut Sources<'s>,
        progress: CopyProgress<'a>,
    ) -> Self {
        let mut known = HashMap::new();
        let mut total = 0;
        for c in used.values() {
            match plan.fates[c.blob_index as usize] {
                Fate::Keep => {
                    known.entry((c.digest, c.uncompressed_size)).or_insert(*c);
                }
                _ => total += c.compressed_size as u64,
            }
        }
        Self {
            boot,
            used,
            dir,
            sources,
            progress,
            known,
            remap: HashMap::new(),
            stats: CopyStats::default(),
            done: 0,
            total,
        }
    }

    /// Write new blob `k` from the used chunks of `members`, in their
    /// original order, into a temporary file of the blob directory (`None`
    /// when every chunk was found elsewhere in the output).
    fn write_group(&mut self, k: usize, members: &[usize]) -> Result<Option<(BlobSpec, NamedTempFile)>> {
        let index = (self.boot.blobs.len() + k) as u32;
        let mut chunks: Vec<ChunkSpec> =
            self.used.values().filter(|c| members.contains(&(c.blob_index as usize))).copied().collect();
        chunks.sort_by_key(|c| (c.blob_index, c.compressed_offset, c.ci_index));
        let compressor = self.boot.blobs[members[0]].compressor;
        let t = temp_in(self.dir)?;
        let file = t.as_file().try_clone().map_err(|e| BuildError::io(self.dir, e))?;
        let mut sink = BlobSink::new(file, t.path());
        let mut locs: Vec<ChunkLocation> = Vec::new();
        let mut uoff = 0u64;
        for c in chunks {
            if let Some(k) = self.known.get(&(c.digest, c.uncompressed_size)) {
                self.remap.insert((c.blob_index, c.ci_index), *k);
                self.stats.dedup += 1;
                self.tick(c.compressed_size);
                continue;
            }
            if locs.len() as u32 >= MAX_CHUNKS_PER_BLOB {
                return Err(BuildError::Invalid(format!(
                    "new blob {k} would hold more than {MAX_CHUNKS_PER_BLOB} chunks: lower max_compact_size"
                )));
            }
            let data = self.read_verified(&c)?;
            let loc = ChunkLocation {
                compressed_offset: sink.len(),
                compressed_size: c.compressed_size,
                uncompressed_offset: uoff,
                uncompressed_size: c.uncompressed_size,
            };
            sink.write(&data)?;
            uoff += (c.uncompressed_size as u64).div_ceil(4096) * 4096;
            let moved = ChunkSpec {
                blob_index: index,
                ci_index: locs.len() as u32,
                compressed_offset: loc.compressed_offset,
                uncompressed_offset: loc.uncompressed_offset,
                ..c
            };
            locs.push(loc);
            self.known.insert((c.digest, c.uncompressed_size), moved);
            self.remap.insert((c.blob_index, c.ci_index), moved);
            self.stats.chunks += 1;
            self.stats.bytes += c.compressed_size as u64;
            self.tick(c.compressed_size);
        }
        if locs.is_empty() {
            return Ok(None);
        }
        let (spec, _) = seal_blob(sink, &locs, compressor, self.boot.sb.digester)?;
        t.as_file().sync_all().map_err(|e| BuildError::io(t.path(), e))?;
        Ok(Some((spec, t)))
    }

    fn tick(&mut self, n: u32) {
        self.done += n as u64;
        (self.progress)(self.done, self.total);
    }

    /// The stored bytes of chunk `c`, checked against its digest.
    fn read_verified(&mut self, c: &ChunkSpec) -> Result<Vec<u8>> {
        let info = &self.boot.blobs[c.blob_index as usize];
        let mut stored = vec![0u8; c.compressed_size as usize];
        self.sources.read(info, c.compressed_offset, &mut stored)?;
        let bad = |reason: String| BuildError::BadChunk { blob_id: info.blob_id.clone(), ci_index: c.ci_index, reason };
        let plain = if c.flags & flags::CHUNK_COMPRESSED != 0 {
            info.compressor.decompress(&stored, c.uncompressed_size as usize).map_err(|e| bad(e.to_string()))?
        } else {
            stored.clone()
        };
        if plain.len() != c.uncompressed_size as usize || self.boot.sb.digester.digest(&plain) != c.digest {
            return Err(bad(format!(
                "data at offset {:#x} does not match the bootstrap's digest: the blob is corrupt or not the one \
                 the image names; nothing was written",
                c.compressed_offset
            )));
        }
        Ok(stored)
    }
}

/// The output blob table (kept blobs in their order, each new blob at the
/// place of its first source) and the final index of every copy-time index.
fn new_table<B: AsRef<[u8]>>(
    boot: &Bootstrap<B>,
    plan: &Plan,
    new_blobs: &[NewBlob],
) -> Result<(Vec<BlobSpec>, HashMap<u32, u32>)> {
    let n = boot.blobs.len();
    let mut table = Vec::new();
    let mut index_of = HashMap::new();
    for (i, b) in boot.blobs.iter().enumerate() {
        let (virt, spec) = match plan.fates[i] {
            Fate::Keep => (i, blob_spec(b).map_err(BuildError::Invalid)?),
            Fate::Rewrite(k) if plan.groups[k][0] == i => match &new_blobs[k] {
                Some(s) => (n + k, s.clone()),
                None => continue,
            },
            _ => continue,
        };
        index_of.insert(virt as u32, table.len() as u32);
        table.push(spec);
    }
    Ok((table, index_of))
}

/// Point every chunk of `tree` at its blob in the output table.
fn repoint(tree: &mut Tree, plan: &Plan, remap: &HashMap<(u32, u32), ChunkSpec>, index_of: &HashMap<u32, u32>) {
    for c in tree.inodes.iter_mut().flat_map(|n| n.meta.chunks.iter_mut()) {
        if plan.fates[c.blob_index as usize] != Fate::Keep {
            // Every chunk of a rewritten blob was copied or found elsewhere.
            *c = ChunkSpec { file_offset: c.file_offset, ..remap[&(c.blob_index, c.ci_index)] };
        }
        c.blob_index = index_of[&c.blob_index];
    }
}

/// The input's prefetch list, as indexes of `nodes` (matched by path).
fn prefetch_nodes<B: AsRef<[u8]>>(boot: &Bootstrap<B>, nodes: &[NodeSpec]) -> Result<Vec<usize>> {
    let fe = |e| BuildError::Invalid(format!("prefetch table: {e}"));
    let nids = boot.prefetch_nids().map_err(fe)?;
    if nids.is_empty() {
        return Ok(Vec::new());
    }
    let mut path_of: HashMap<u64, Vec<u8>> = HashMap::new();
    boot.walk(|path, _, ino| {
        path_of.entry(ino.nid).or_insert_with(|| path.to_vec());
        Ok(())
    })
    .map_err(fe)?;
    let mut paths: Vec<Vec<u8>> = Vec::with_capacity(nodes.len());
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let p = match i {
            0 => b"/".to_vec(),
            _ if n.parent == 0 => [b"/", n.name.as_slice()].concat(),
            _ => [paths[n.parent].as_slice(), b"/", n.name.as_slice()].concat(),
        };
        index.insert(p.clone(), i);
        paths.push(p);
    }
    Ok(nids.iter().filter_map(|nid| path_of.get(nid)).filter_map(|p| index.get(p).copied()).collect())
}

fn write_out(path: &Path, data: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(BuildError::Invalid(format!("bootstrap {}: is a directory; give a file name", path.display())));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut t = temp_in(&dir)?;
    t.write_all(data).map_err(|e| BuildError::io(t.path(), e))?;
    t.as_file().sync_all().map_err(|e| BuildError::io(t.path(), e))?;
    publish(t, path)
}

impl CompactReport {
    /// The figures of the input, as if nothing changed.
    fn before<B: AsRef<[u8]>>(boot: &Bootstrap<B>, fs_version: u32) -> Self {
        let sizes: Vec<u64> = boot.blobs.iter().map(|b| b.compressed_size).collect();
        Self {
            bootstrap: None,
            compacted: false,
            blobs: boot.blobs.iter().map(|b| b.blob_id.clone()).collect(),
            blobs_before: sizes.len(),
            blobs_after: sizes.len(),
            bytes_before: sizes.iter().sum(),
            bytes_after: sizes.iter().sum(),
            blob_sizes: sizes,
            new_blobs: Vec::new(),
            rewritten_blobs: Vec::new(),
            dropped_blobs: Vec::new(),
            copied_chunks: 0,
            copied_bytes: 0,
            dedup_chunks: 0,
            fs_version,
            compressor: boot.sb.compressor.name().into(),
            digester: boot.sb.digester.name().into(),
            chunk_size: boot.sb.chunk_size,
        }
    }

    fn after<B: AsRef<[u8]>>(
        &mut self,
        boot: &Bootstrap<B>,
        plan: &Plan,
        table: &[BlobSpec],
        new_blobs: &[NewBlob],
        stats: CopyStats,
    ) {
        self.compacted = true;
        self.blobs = table.iter().map(|b| b.blob_id.clone()).collect();
        self.blob_sizes = table.iter().map(|b| b.compressed_size).collect();
        self.blobs_after = table.len();
        self.bytes_after = self.blob_sizes.iter().sum();
        self.new_blobs = new_blobs.iter().flatten().map(|b| b.blob_id.clone()).collect();
        let ids = |f: fn(&Fate) -> bool| -> Vec<String> {
            boot.blobs.iter().zip(&plan.fates).filter(|(_, x)| f(x)).map(|(b, _)| b.blob_id.clone()).collect()
        };
        self.rewritten_blobs = ids(|f| matches!(f, Fate::Rewrite(_)));
        self.dropped_blobs = ids(|f| *f == Fate::Drop);
        self.copied_chunks = stats.chunks;
        self.copied_bytes = stats.bytes;
        self.dedup_chunks = stats.dedup;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_and_defaults() {
        let (c, w) = CompactConfig::from_json(
            r#"{"min_used_ratio": 10, "compact_blob_size": 4096, "blobs_dir": "/b", "colour": 1}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(c.min_used_ratio, 10);
        assert_eq!(c.compact_blob_size, 4096);
        assert_eq!(c.max_compact_size, DEFAULT_MAX_COMPACT_SIZE);
        assert_eq!(c.layers_to_compact, 0);
        assert_eq!(c.blobs_dir, Some(PathBuf::from("/b")));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("unknown key \"colour\" ignored"), "{w:?}");
    }

    #[test]
    fn config_type_errors_name_the_key() {
        let e = CompactConfig::from_json(r#"{"max_compact_size": "100M"}"#, "c.json").unwrap_err().to_string();
        assert_eq!(e, "compact config c.json: \"max_compact_size\" must be a size in bytes (an integer), got \"100M\"");
        let e = CompactConfig::from_json(r#"{"min_used_ratio": 101}"#, "c.json").unwrap_err().to_string();
        assert!(e.contains("\"min_used_ratio\" must be a percentage from 0 to 100, got 101"), "{e}");
        let e = CompactConfig::from_json(r#"{"blobs_dir": 3}"#, "c.json").unwrap_err().to_string();
        assert!(e.contains("\"blobs_dir\" must be a path string"), "{e}");
        assert!(CompactConfig::from_json("[1]", "c.json").unwrap_err().to_string().contains("expected a JSON object"));
        assert!(CompactConfig::from_json("{", "c.json").unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn v5_images_are_not_rewritten() {
        let e = writable(5, Path::new("/i/boot")).unwrap_err().to_string();
        assert!(e.starts_with("/i/boot: a RAFS v5 image;") && e.contains("--fs-version 6"), "{e}");
        assert!(writable(6, Path::new("/i/boot")).is_ok());
    }

    #[test]
    fn data_size_stops_at_the_chunk_table() {
        let mut b = BlobInfo {
            blob_id: "x".into(),
            blob_index: 0,
            chunk_size: 4096,
            chunk_count: 1,
            compressor: nydus_format::Compressor::Zstd,
            digester: nydus_format::Digester::Blake3,
            features: 0,
            compressed_size: 10_000,
            uncompressed_size: 4096,
            ci_compressor: 0,
            ci_offset: 5000,
            ci_compressed_size: 16,
            ci_uncompressed_size: 16,
            device_blocks: 0,
            mapped_blkaddr: 0,
        };
        assert_eq!(recorded_data_size(&b), Some(5000));
        b.ci_uncompressed_size = 0; // no chunk table (a v5 blob)
        assert_eq!(recorded_data_size(&b), Some(10_000));
        b.compressed_size = 0;
        assert_eq!(recorded_data_size(&b), None);
    }
}
