//! Cutting file data into chunks and writing the data blob.
//!
//! Three kinds of threads cooperate (see [`write_chunks`]):
//! * one reader walks the regular files in node order and reads chunk-sized
//!   pieces (holes of sparse files are recognised with `SEEK_DATA` and never
//!   read);
//! * workers digest and compress pieces in parallel;
//! * the calling thread puts results back in order, deduplicates them by
//!   digest and appends new chunks to the blob.
//!
//! A fixed number of tokens bounds the pieces in flight, so memory stays
//! flat whatever the tree size: at most `tokens × 2 × chunk_size` bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use nydus_format::blob_meta::{encode_trailer, ChunkLocation};
use nydus_format::codec::{crc32c, ChunkEncoder};
use nydus_format::flags;
use nydus_format::writer::{BlobSpec, ChunkSpec};
use nydus_format::{Compressor, Digest, Digester};
use sha2::{Digest as _, Sha256};

use crate::error::{BuildError, Result};
use crate::tree::Tree;

/// Chunking options.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    /// Chunk size (power of two, 4 KiB..16 MiB).
    pub chunk_size: u32,
    /// Chunk compressor.
    pub compressor: Compressor,
    /// Chunk digester.
    pub digester: Digester,
    /// Worker threads.
    pub threads: usize,
}

/// Where blob bytes go: a file, with a running SHA-256 for the blob id.
pub struct BlobSink {
    w: BufWriter<File>,
    hasher: Sha256,
    pos: u64,
    path: PathBuf,
}

impl BlobSink {
    /// Write into `file` (already created), reporting errors against `path`.
    pub fn new(file: File, path: &Path) -> Self {
        Self { w: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), pos: 0, path: path.into() }
    }

    /// Append `data` to the blob.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.w.write_all(data).map_err(|e| BuildError::io(&self.path, e))?;
        self.hasher.update(data);
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// Nothing written yet?
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    fn finish(mut self) -> Result<String> {
        self.w.flush().map_err(|e| BuildError::io(&self.path, e))?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// What chunking produced.
#[derive(Debug, Clone, Default)]
pub struct ChunkStats {
    /// Chunks referenced by files.
    pub chunks: u64,
    /// Of those, chunks that reused an earlier identical chunk.
    pub dedup_chunks: u64,
    /// Plain bytes of all file data.
    pub data_bytes: u64,
    /// Bytes of stored chunk data (before the trailer).
    pub stored_bytes: u64,
}

enum Piece {
    Data(Vec<u8>),
    Hole(u32),
}

struct Job {
    seq: u64,
    node: usize,
    file_offset: u64,
    piece: Piece,
}

struct Done {
    seq: u64,
    node: usize,
    file_offset: u64,
    len: u32,
    digest: Digest,
    crc: u32,
    payload: Arc<Vec<u8>>,
    compressed: bool,
}

/// Progress callback: called with plain bytes processed.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Chunks that already exist (in a parent image's blobs): new data with one
/// of these digests is referenced, not stored again.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    /// Known chunks by digest.
    pub known: HashMap<Digest, ChunkSpec>,
    /// Blob index the new blob will get in the image's blob table.
    pub blob_index: u32,
}

/// Chunk every regular file of `tree` that still has a source into `sink`
/// (blob `dedup.blob_index`), filling in the inodes' chunk lists. Returns
/// `None` when no new chunk was stored.
pub fn write_chunks(
    tree: &mut Tree,
    dedup: &Dedup,
    opts: &ChunkOptions,
    sink: BlobSink,
    progress: Progress,
) -> Result<(Option<(BlobSpec, String)>, ChunkStats)> {
    let files: Vec<(usize, PathBuf, u64)> = tree.data_files().into_iter().map(|f| (f.inode, f.path, f.size)).collect();
    let feed = move |r: &mut Feeder| -> Result<()> {
        for (node, path, size) in &files {
            if !r.read_file(*node, path, *size)? {
                return Err(Feeder::stopped());
            }
        }
        Ok(())
    };
    let ((), chunks, blob, stats) = chunk_stream(feed, dedup, opts, sink, progress)?;
    for (node, list) in chunks {
        tree.inodes[node].meta.chunks = list;
    }
    Ok((blob, stats))
}

/// Chunks produced for each node (inode index), in file order.
pub type NodeChunks = HashMap<usize, Vec<ChunkSpec>>;

/// What [`chunk_stream`] returns: the source's result, the chunks of each
/// fed node, the new blob (if any chunk was stored) and statistics.
pub type Streamed<R> = (R, NodeChunks, Option<(BlobSpec, String)>, ChunkStats);

/// Run the chunking pipeline with `source` as its reading end: `source`
/// runs on its own thread and hands file data to the [`Feeder`] in order
/// (all pieces of one file consecutively, files in any order); the pieces
/// are digested and compressed in parallel and stored (or deduplicated) in
/// the order they were fed. Returns what `source` returned, the chunks of
/// every fed node, the new blob (`None` if no chunk was stored) and
/// statistics.
pub fn chunk_stream<R: Send>(
    source: impl FnOnce(&mut Feeder) -> Result<R> + Send,
    dedup: &Dedup,
    opts: &ChunkOptions,
    sink: BlobSink,
    progress: Progress,
) -> Result<Streamed<R>> {
    let tokens = ((8u64 << 20) / opts.chunk_size as u64).clamp(4, 1024) as usize;
    let (job_tx, job_rx) = bounded::<Job>(tokens);
    let (done_tx, done_rx) = unbounded::<Result<Done>>();
    let (tok_tx, tok_rx) = bounded::<()>(tokens);
    let (out_tx, out_rx) = bounded::<(Arc<Vec<u8>>, bool)>(tokens);
    // Recycled plain-data buffers; bounded so that spare buffers are dropped.
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(tokens);
    for _ in 0..tokens {
        tok_tx.send(()).expect("capacity");
    }
    let mut stats = ChunkStats::default();
    let mut locs: Vec<ChunkLocation> = Vec::new();
    let mut chunks = NodeChunks::new();
    let (outcome, fed, sink) = std::thread::scope(|s| {
        let reader = {
            let chunk_size = opts.chunk_size;
            let mut feeder = Feeder { chunk_size, jobs: job_tx, tokens: tok_rx, pool: pool_rx, seq: 0 };
            s.spawn(move || source(&mut feeder))
        };
        for _ in 0..opts.threads.max(1) {
            let (job_rx, done_tx, pool_tx) = (job_rx.clone(), done_tx.clone(), pool_tx.clone());
            let (compressor, digester) = (opts.compressor, opts.digester);
            s.spawn(move || work(job_rx, done_tx, pool_tx, compressor, digester));
        }
        let writer = s.spawn(move || write_loop(sink, out_rx, pool_tx));
        drop(done_tx);
        drop(job_rx);
        let collector = Collector { chunks: &mut chunks, dedup, locs: &mut locs, stats: &mut stats };
        let outcome = collector.run(done_rx, tok_tx, out_tx, progress);
        let fed = reader.join().expect("chunk source thread panicked");
        let sink = writer.join().expect("blob writer thread panicked");
        (outcome, fed, sink)
    });
    // The collector's or the writer's error explains a stopped source.
    outcome?;
    let sink = sink?;
    let fed = fed?;
    if locs.is_empty() {
        return Ok((fed, chunks, None, stats));
    }
    stats.stored_bytes = sink.len();
    let (spec, blob_id) = seal_blob(sink, &locs, opts.compressor, opts.digester)?;
    Ok((fed, chunks, Some((spec, blob_id)), stats))
}

/// Finish a blob whose chunk data (`locs`, in ci order, compressed with
/// `compressor`) is in `sink`: append the chunk table and blob meta header,
/// flush, and describe the blob. Its id is the SHA-256 of all its bytes.
pub fn seal_blob(
    mut sink: BlobSink,
    locs: &[ChunkLocation],
    compressor: Compressor,
    digester: Digester,
) -> Result<(BlobSpec, String)> {
    let features = flags::BLOB_ALIGNED | flags::BLOB_CAP_TAR_TOC;
    let ci_offset = sink.len();
    let trailer =
        encode_trailer(locs, compressor, features, ci_offset).map_err(|e| BuildError::format(&sink.path, e))?;
    sink.write(&trailer.bytes)?;
    let compressed_size = sink.len();
    let uncompressed_size =
        locs.last().map_or(0, |l| l.uncompressed_offset + (l.uncompressed_size as u64).div_ceil(4096) * 4096);
    let blob_id = sink.finish()?;
    let spec = BlobSpec {
        blob_id: blob_id.clone(),
        chunk_count: locs.len() as u32,
        compressor,
        digester,
        features,
        compressed_size,
        uncompressed_size,
        ci_compressor: trailer.ci_compressor,
        ci_offset,
        ci_compressed_size: trailer.ci_compressed_size,
        ci_uncompressed_size: trailer.ci_uncompressed_size,
    };
    Ok((spec, blob_id))
}

/// Append stored chunks to the blob (and its running SHA-256) off the
/// collector's thread; hand plain buffers back to the reader's pool.
fn write_loop(mut sink: BlobSink, rx: Receiver<(Arc<Vec<u8>>, bool)>, pool: Sender<Vec<u8>>) -> Result<BlobSink> {
    for (payload, compressed) in rx {
        sink.write(&payload)?;
        if !compressed {
            if let Ok(buf) = Arc::try_unwrap(payload) {
                let _ = pool.try_send(buf);
            }
        }
    }
    Ok(sink)
}

/// The collecting end of the pipeline: puts chunks back in order,
/// deduplicates them (also against [`Dedup::known`]) and gives stored ones
/// their place in the blob.
struct Collector<'a> {
    chunks: &'a mut NodeChunks,
    dedup: &'a Dedup,
    locs: &'a mut Vec<ChunkLocation>,
    stats: &'a mut ChunkStats,
}

impl Collector<'_> {
    fn run(
        self,
        done_rx: Receiver<Result<Done>>,
        tok_tx: Sender<()>,
        out: Sender<(Arc<Vec<u8>>, bool)>,
        progress: Progress,
    ) -> Result<()> {
        let Collector { chunks, dedup, locs, stats } = self;
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        let mut next = 0u64;
        let mut seen: HashMap<Digest, ChunkSpec> = dedup.known.clone();
        let mut uoff = 0u64;
        let mut coff = 0u64;
        for msg in done_rx {
            let d = msg?;
            pending.insert(d.seq, d);
            while let Some(d) = pending.remove(&next) {
                next += 1;
                let _ = tok_tx.send(());
                stats.chunks += 1;
                stats.data_bytes += d.len as u64;
                let chunk = match seen.get(&d.digest) {
                    Some(c) if c.uncompressed_size == d.len => {
                        stats.dedup_chunks += 1;
                        ChunkSpec { file_offset: d.file_offset, ..*c }
                    }
                    _ => {
                        if locs.len() as u32 > nydus_format::ondisk::MAX_CHUNKS_PER_BLOB {
                            return Err(BuildError::Invalid(
                                "more than 2^24 distinct chunks in one blob; use a larger --chunk-size".into(),
                            ));
                        }
                        let loc = ChunkLocation {
                            compressed_offset: coff,
                            compressed_size: d.payload.len() as u32,
                            uncompressed_offset: uoff,
                            uncompressed_size: d.len,
                        };
                        // v1 ci entries encode "compressed" as size inequality; an
                        // output of equal size was already rejected by the encoder.
                        coff += d.payload.len() as u64;
                        if out.send((d.payload.clone(), d.compressed)).is_err() {
                            break; // the writer failed; its error is reported
                        }
                        uoff += (d.len as u64).div_ceil(4096) * 4096;
                        let mut fl = if d.compressed { flags::CHUNK_COMPRESSED } else { 0 };
                        if d.crc != 0 {
                            fl |= flags::CHUNK_HAS_CRC32;
                        }
                        let c = ChunkSpec {
                            blob_index: dedup.blob_index,
                            ci_index: locs.len() as u32,
                            digest: d.digest,
                            flags: fl,
                            compressed_offset: loc.compressed_offset,
                            compressed_size: loc.compressed_size,
                            uncompressed_offset: loc.uncompressed_offset,
                            uncompressed_size: d.len,
                            file_offset: d.file_offset,
                            crc32: d.crc,
                        };
                        locs.push(loc);
                        seen.insert(d.digest, c);
                        c
                    }
                };
                chunks.entry(d.node).or_default().push(chunk);
                progress(d.len as u64);
            }
        }
        Ok(())
    }
}

fn work(
    jobs: Receiver<Job>,
    done: Sender<Result<Done>>,
    pool: Sender<Vec<u8>>,
    compressor: Compressor,
    digester: Digester,
) {
    let mut enc = match ChunkEncoder::new(compressor) {
        Ok(e) => e,
        Err(e) => {
            let _ = done.send(Err(BuildError::Invalid(e.to_string())));
            return;
        }
    };
    let mut holes: HashMap<u32, Encoded> = HashMap::new();
    for job in jobs {
        let len = match &job.piece {
            Piece::Data(d) => d.len() as u32,
            Piece::Hole(l) => *l,
        };
        let r = match job.piece {
            Piece::Data(data) => encode(&mut enc, digester, data, Some(&pool)),
            Piece::Hole(len) => match holes.get(&len) {
                Some(h) => Ok(h.clone()),
                None => encode(&mut enc, digester, vec![0u8; len as usize], None).inspect(|h| {
                    holes.insert(len, h.clone());
                }),
            },
        };
        let msg = r.map(|(digest, crc, payload, compressed)| Done {
            seq: job.seq,
            node: job.node,
            file_offset: job.file_offset,
            len,
            digest,
            crc,
            payload,
            compressed,
        });
        if done.send(msg).is_err() {
            return;
        }
    }
}

type Encoded = (Digest, u32, Arc<Vec<u8>>, bool);

fn encode(
    enc: &mut ChunkEncoder,
    digester: Digester,
    data: Vec<u8>,
    pool: Option<&Sender<Vec<u8>>>,
) -> Result<Encoded> {
    let digest = digester.digest(&data);
    let crc = crc32c(&data);
    match enc.compress(&data).map_err(|e| BuildError::Invalid(e.to_string()))? {
        Some(z) => {
            if let Some(p) = pool {
                let _ = p.try_send(data);
            }
            Ok((digest, crc, Arc::new(z), true))
        }
        None => Ok((digest, crc, Arc::new(data), false)),
    }
}

/// The reading end of the pipeline: turns file data into chunk jobs.
pub struct Feeder {
    chunk_size: u32,
    jobs: Sender<Job>,
    tokens: Receiver<()>,
    pool: Receiver<Vec<u8>>,
    seq: u64,
}

impl Feeder {
    /// The error a source returns when a feed call reported that the
    /// pipeline shut down (the pipeline's own error is reported instead).
    pub fn stopped() -> BuildError {
        BuildError::Invalid("chunking pipeline stopped".into())
    }

    /// Queue every chunk of `size` bytes read sequentially from `r` as the
    /// data of node `node`; `Ok(false)` if the pipeline shut down. Only
    /// chunk-sized buffers are allocated, whatever `size` claims; a reader
    /// ending early is an error naming `name`.
    pub fn feed_reader(&mut self, node: usize, r: &mut dyn Read, size: u64, name: &str) -> Result<bool> {
        let mut off = 0u64;
        while off < size {
            let len = (size - off).min(self.chunk_size as u64) as u32;
            if self.tokens.recv().is_err() {
                return Ok(false);
            }
            let mut buf = self.pool.try_recv().unwrap_or_default();
            if buf.len() >= len as usize {
                buf.truncate(len as usize);
            } else {
                buf.resize(len as usize, 0);
            }
            let mut got = 0usize;
            while got < buf.len() {
                match r.read(&mut buf[got..]) {
                    Ok(0) => {
                        return Err(BuildError::Invalid(format!(
                            "{name}: data ends after {} of {size} declared bytes (truncated archive)",
                            off + got as u64
                        )))
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(BuildError::Invalid(format!("{name}: cannot read data: {e}"))),
                }
            }
            if self.jobs.send(Job { seq: self.seq, node, file_offset: off, piece: Piece::Data(buf) }).is_err() {
                return Ok(false);
            }
            self.seq += 1;
            off += len as u64;
        }
        Ok(true)
    }

    /// Queue every chunk of one file; `Ok(false)` if the pipeline shut down.
    fn read_file(&mut self, node: usize, path: &Path, size: u64) -> Result<bool> {
        let mut f = File::open(path).map_err(|e| BuildError::io(path, e))?;
        let md = f.metadata().map_err(|e| BuildError::io(path, e))?;
        if md.len() != size {
            return Err(BuildError::io(path, std::io::Error::other("file changed during the build (size differs)")));
        }
        let sparse = md.blocks() * 512 < size;
        let mut off = 0u64;
        while off < size {
            let len = (size - off).min(self.chunk_size as u64) as u32;
            if self.tokens.recv().is_err() {
                return Ok(false);
            }
            let piece = if sparse && is_hole(&f, off, len as u64) {
                Piece::Hole(len)
            } else {
                Piece::Data(self.read_piece(&mut f, path, sparse, off, len)?)
            };
            if self.jobs.send(Job { seq: self.seq, node, file_offset: off, piece }).is_err() {
                return Ok(false);
            }
            self.seq += 1;
            off += len as u64;
        }
        Ok(true)
    }

    fn read_piece(&mut self, f: &mut File, path: &Path, sparse: bool, off: u64, len: u32) -> Result<Vec<u8>> {
        // Reuse a buffer from the pool: no fresh allocation or zeroing per chunk.
        let mut buf = self.pool.try_recv().unwrap_or_default();
        if buf.len() >= len as usize {
            buf.truncate(len as usize);
        } else {
            buf.resize(len as usize, 0);
        }
        let res = if sparse {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut buf, off)
        } else {
            f.read_exact(&mut buf)
        };
        res.map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::other("file shrank during the build")
            } else {
                e
            };
            BuildError::io(path, e)
        })?;
        Ok(buf)
    }
}

/// Whether `[off, off+len)` of `f` holds no data (lies in a hole).
fn is_hole(f: &File, off: u64, len: u64) -> bool {
    // SAFETY: lseek on a file descriptor we own; it only moves the file
    // offset (which positional reads ignore) and cannot touch memory.
    let data = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: no data at or after `off`. Anything else: assume data.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    data as u64 >= off + len
}
