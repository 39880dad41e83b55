//! Command-line definitions (upstream `nydus-image` flags).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nydus_builder::create::SourceType;
use nydus_builder::tree::WhiteoutSpec;
use nydus_format::{Compressor, Digester};

/// Build, check, inspect, unpack and export Nydus RAFS v6 images.
#[derive(Parser, Debug)]
#[command(name = "nydus-image", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level: trace, debug, info, warn, error (or a tracing filter).
    #[arg(short = 'l', long, global = true, default_value = "info")]
    pub log_level: String,
    /// Write logs to this file instead of stderr.
    #[arg(short = 'L', long, global = true)]
    pub log_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build a RAFS image (bootstrap + data blob) from a directory or an OCI
    /// layer tar / tar.gz (--type).
    Create(CreateArgs),
    /// Merge per-layer bootstraps (lowest first) into one image bootstrap,
    /// applying each layer's whiteouts with overlayfs semantics.
    Merge(MergeArgs),
    /// Compact an image: rewrite blobs mostly unused by the bootstrap, merge
    /// small blobs, and write a bootstrap pointing at the new blobs.
    Compact(CompactArgs),
    /// Validate an image: every inode, directory, xattr and chunk reference
    /// (and, with --blob-dir, every chunk's data and digest).
    Check(CheckArgs),
    /// Show image statistics: entries, data size, dedup and compression.
    Stat(StatArgs),
    /// Explore an image interactively, or answer one request (-R) as JSON.
    Inspect(InspectArgs),
    /// Write the image's tree, with all metadata and data, to a tar archive.
    Unpack(UnpackArgs),
    /// Export an image as a raw EROFS disk mountable by the Linux kernel.
    Export(ExportArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CompressorArg {
    /// No compression.
    None,
    /// Raw LZ4 blocks (fast).
    #[value(name = "lz4_block")]
    Lz4Block,
    /// zstd level 3 (default).
    Zstd,
}

impl From<CompressorArg> for Compressor {
    fn from(c: CompressorArg) -> Self {
        match c {
            CompressorArg::None => Compressor::None,
            CompressorArg::Lz4Block => Compressor::Lz4Block,
            CompressorArg::Zstd => Compressor::Zstd,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DigesterArg {
    /// BLAKE3 (default).
    Blake3,
    /// SHA-256.
    Sha256,
}

impl From<DigesterArg> for Digester {
    fn from(d: DigesterArg) -> Self {
        match d {
            DigesterArg::Blake3 => Digester::Blake3,
            DigesterArg::Sha256 => Digester::Sha256,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WhiteoutArg {
    /// OCI `.wh.NAME` files and `.wh..wh..opq` (dropped when there is no parent layer).
    Oci,
    /// overlayfs 0/0 character devices and `trusted.overlay.opaque=y` (kept as they are when there is no parent layer).
    Overlayfs,
    /// No whiteout handling.
    None,
}

impl From<WhiteoutArg> for WhiteoutSpec {
    fn from(w: WhiteoutArg) -> Self {
        match w {
            WhiteoutArg::Oci => WhiteoutSpec::Oci,
            WhiteoutArg::Overlayfs => WhiteoutSpec::Overlayfs,
            WhiteoutArg::None => WhiteoutSpec::None,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SourceTypeArg {
    /// SOURCE is a directory.
    #[value(name = "dir-rafs")]
    Dir,
    /// SOURCE is an uncompressed OCI layer tar (a file, or - for stdin),
    /// read as a stream: nothing is unpacked to disk.
    #[value(name = "tar-rafs")]
    Tar,
    /// SOURCE is a gzip-compressed OCI layer tar (a file, or - for stdin),
    /// read as a stream: nothing is unpacked to disk.
    #[value(name = "targz-rafs")]
    Targz,
    /// SOURCE is an eStargz layer blob, converted like a tar.gz (its TOC
    /// and landmark entries are dropped).
    #[value(name = "estargz-rafs")]
    EstargzRafs,
    /// SOURCE is an eStargz layer blob or its TOC (stargz.index.json): only
    /// a bootstrap is written, whose chunks point into the unmodified blob
    /// (named by --blob-id, the layer digest's hex; with a TOC also pass
    /// --blob-data-size).
    #[value(name = "estargztoc-ref", alias = "stargz_index")]
    EstargztocRef,
}

impl From<SourceTypeArg> for SourceType {
    fn from(t: SourceTypeArg) -> Self {
        match t {
            SourceTypeArg::Dir => SourceType::Dir,
            SourceTypeArg::Tar => SourceType::Tar,
            SourceTypeArg::Targz => SourceType::TarGz,
            SourceTypeArg::EstargzRafs => SourceType::EStargz,
            SourceTypeArg::EstargztocRef => SourceType::EStargzToc { blob_size: None },
        }
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Source: a directory, or with --type tar-rafs/targz-rafs a tar file
    /// (- reads it from stdin).
    pub source: PathBuf,
    /// Kind of SOURCE. Tar entries escaping the root (.., absolute names)
    /// or below a non-directory are rejected; the ./ entry gives the root
    /// its attributes, missing parent directories get mode 0755, owner 0:0,
    /// mtime 0; a later entry for a name replaces an earlier one.
    #[arg(
        short = 't',
        long = "type",
        alias = "source-type",
        value_name = "TYPE",
        value_enum,
        default_value = "dir-rafs"
    )]
    pub source_type: SourceTypeArg,
    /// Size of the eStargz blob, in hex (0x optional, as upstream), for
    /// --type estargztoc-ref with a TOC as SOURCE.
    #[arg(long, value_name = "HEX")]
    pub blob_data_size: Option<String>,
    /// Where to write the bootstrap (default with --blob-dir: DIR/SHA256, the bootstrap's digest).
    #[arg(short = 'B', long)]
    pub bootstrap: Option<PathBuf>,
    /// Where to write the data blob: a file or a FIFO.
    #[arg(short = 'b', long, conflicts_with = "blob_dir")]
    pub blob: Option<PathBuf>,
    /// Directory receiving the data blob, named by its id.
    #[arg(short = 'D', long)]
    pub blob_dir: Option<PathBuf>,
    /// Blob id to record instead of the blob's SHA-256.
    #[arg(long)]
    pub blob_id: Option<String>,
    /// RAFS version to write (only 6).
    #[arg(long, default_value_t = 6)]
    pub fs_version: u32,
    /// Chunk compressor.
    #[arg(short = 'c', long, value_enum, default_value = "zstd")]
    pub compressor: CompressorArg,
    /// Chunk digest algorithm.
    #[arg(long, value_enum, default_value = "blake3")]
    pub digester: DigesterArg,
    /// Chunk size: a power of two from 0x1000 to 0x1000000 (hex or decimal).
    #[arg(short = 'S', long, default_value = "0x100000")]
    pub chunk_size: String,
    /// Produce byte-identical output for identical input (always the case here;
    /// accepted for compatibility).
    #[arg(short = 'R', long)]
    pub repeatable: bool,
    /// Whiteout convention of the source. With --parent-bootstrap the
    /// whiteouts delete (or, for opaque directories, hide) entries of the
    /// parent; without a parent, oci whiteout files are dropped and
    /// overlayfs ones kept as they are. Layers meant for `merge` are built
    /// with `none`, which keeps every whiteout as an ordinary entry.
    #[arg(short = 'W', long, value_enum, default_value = "oci")]
    pub whiteout_spec: WhiteoutArg,
    /// Bootstrap of the lower layers: build the source as a new layer on top
    /// of it. The new bootstrap describes the merged tree and references the
    /// parent's blobs (same indexes); only new data goes into the new blob.
    /// The parent must use the same --chunk-size and --digester.
    #[arg(short = 'p', long, value_name = "BOOTSTRAP")]
    pub parent_bootstrap: Option<PathBuf>,
    /// Chunk dictionary: `bootstrap=DICT` (or just DICT), the bootstrap of an
    /// image whose chunks are referenced instead of stored again. The
    /// dictionary blobs used join the new image's blob table, so nydusd must
    /// find them in the same backend. Same --chunk-size and --digester as
    /// the dictionary.
    #[arg(long, value_name = "bootstrap=DICT")]
    pub chunk_dict: Option<String>,
    /// Write a JSON report of what was built to this file.
    #[arg(short = 'J', long)]
    pub output_json: Option<PathBuf>,
    #[command(flatten)]
    pub upload: UploadArgs,
}

/// Where `create` uploads the finished blob.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendTypeArg {
    /// An OCI distribution registry (push with POST/PATCH/PUT).
    Registry,
    /// An S3 bucket.
    S3,
    /// An Aliyun OSS bucket.
    Oss,
    /// A local directory (`dir`).
    Localfs,
}

impl BackendTypeArg {
    /// The type name of upstream's backend sections.
    pub fn name(self) -> &'static str {
        match self {
            BackendTypeArg::Registry => "registry",
            BackendTypeArg::S3 => "s3",
            BackendTypeArg::Oss => "oss",
            BackendTypeArg::Localfs => "localfs",
        }
    }
}

/// Upload flags of `create` (upstream's names).
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// After the build, upload the blob to this kind of backend (skipped when
    /// the backend already has it). Without --blob/--blob-dir the blob is
    /// built in a temporary directory next to the bootstrap and removed once
    /// uploaded.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub backend_type: Option<BackendTypeArg>,
    /// The backend's settings as JSON: the object upstream puts under
    /// `device.backend.config`, e.g. '{"scheme":"https","host":"reg:5000","repo":"ns/img","auth":"BASE64"}'.
    #[arg(long, value_name = "JSON", requires = "backend_type", conflicts_with = "backend_config_file")]
    pub backend_config: Option<String>,
    /// Read the backend's settings (JSON, as for --backend-config) from this file.
    #[arg(long, value_name = "FILE", requires = "backend_type")]
    pub backend_config_file: Option<PathBuf>,
}

impl CreateArgs {
    /// The kind of source, with --blob-data-size for eStargz TOCs.
    pub fn source(&self) -> Result<SourceType> {
        let size = match self.blob_data_size.as_deref().map(str::trim) {
            None => None,
            Some(s) => match u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16) {
                Ok(v) => Some(v),
                Err(_) => bail!("invalid --blob-data-size {s}: give the blob's size in hex"),
            },
        };
        match (self.source_type, size) {
            (SourceTypeArg::EstargztocRef, blob_size) => Ok(SourceType::EStargzToc { blob_size }),
            (_, Some(_)) => bail!("--blob-data-size only applies to --type estargztoc-ref"),
            (t, None) => Ok(t.into()),
        }
    }

    /// The validated chunk size.
    pub fn chunk_size(&self) -> Result<u32> {
        let s = self.chunk_size.trim();
        let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse::<u64>(),
        };
        match v {
            Ok(v) if v.is_power_of_two() && (0x1000..=0x100_0000).contains(&v) => Ok(v as u32),
            _ => bail!("invalid --chunk-size {s}: the chunk size must be a power of two from 0x1000 to 0x1000000"),
        }
    }
}

/// The bootstrap of a command that reads an image, given either as the
/// argument or with `--bootstrap` (upstream accepts both spellings).
#[derive(Args, Debug)]
pub struct BootstrapArg {
    /// The image's bootstrap.
    #[arg(value_name = "BOOTSTRAP")]
    pub bootstrap_pos: Option<PathBuf>,
    /// The image's bootstrap (alternative to the argument).
    #[arg(short = 'B', long)]
    pub bootstrap: Option<PathBuf>,
}

impl BootstrapArg {
    /// The one bootstrap path given.
    pub fn path(self) -> Result<PathBuf> {
        match (self.bootstrap_pos, self.bootstrap) {
            (Some(p), None) | (None, Some(p)) => Ok(p),
            (Some(a), Some(b)) if a == b => Ok(a),
            (Some(_), Some(_)) => bail!("give the bootstrap either as an argument or with --bootstrap, not both"),
            (None, None) => bail!("missing bootstrap: pass BOOTSTRAP or --bootstrap FILE"),
        }
    }
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Per-layer bootstraps, lowest layer first. Build each layer on its own
    /// (no --parent-bootstrap) with --whiteout-spec none, so that its
    /// whiteouts are kept for the merge to apply.
    #[arg(value_name = "BOOTSTRAP", required = true)]
    pub sources: Vec<PathBuf>,
    /// Where to write the merged bootstrap.
    #[arg(short = 'B', long)]
    pub bootstrap: PathBuf,
    /// Bootstrap of an image the layers go on top of.
    #[arg(short = 'p', long, value_name = "BOOTSTRAP")]
    pub parent_bootstrap: Option<PathBuf>,
    /// The chunk dictionary the layers were built with (`bootstrap=DICT` or
    /// DICT): its blobs are shared, not a layer's own blob.
    #[arg(long, value_name = "bootstrap=DICT")]
    pub chunk_dict: Option<String>,
    /// Comma-separated, one per source: the SHA-256 (hex, `sha256:` allowed)
    /// to use as the id of that layer's own blob, e.g. its digest in a registry.
    #[arg(long, value_name = "D1,D2,...")]
    pub blob_digests: Option<String>,
    /// Comma-separated, one per source: an id for that layer's own blob
    /// (--blob-digests wins where both are given).
    #[arg(long, value_name = "ID1,ID2,...")]
    pub original_blob_ids: Option<String>,
    /// Comma-separated, one per source: the size to record for that layer's
    /// own blob.
    #[arg(long, value_name = "S1,S2,...")]
    pub blob_sizes: Option<String>,
    /// How whiteout entries of the layers are interpreted.
    #[arg(short = 'W', long, value_enum, default_value = "oci")]
    pub whiteout_spec: WhiteoutArg,
    /// Write a JSON report of what was merged to this file.
    #[arg(short = 'J', long)]
    pub output_json: Option<PathBuf>,
}

/// Split a comma-separated list flag.
pub fn split_list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
}

/// Parse `--blob-sizes`.
pub fn parse_sizes(s: &Option<String>) -> Result<Option<Vec<u64>>> {
    split_list(s)
        .map(|l| {
            l.iter()
                .map(|x| {
                    x.parse::<u64>().map_err(|_| anyhow::anyhow!("invalid --blob-sizes entry {x:?}: not a number"))
                })
                .collect()
        })
        .transpose()
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub image: BootstrapArg,
    /// Also read and verify every chunk of the blobs found in this directory.
    #[arg(short = 'D', long)]
    pub blob_dir: Option<PathBuf>,
    /// Print every inode.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Write the result as JSON to this file.
    #[arg(short = 'J', long)]
    pub output_json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// Bootstrap to describe.
    #[arg(short = 'B', long)]
    pub bootstrap: PathBuf,
    /// Write the statistics as JSON to this file.
    #[arg(short = 'J', long)]
    pub output_json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: BootstrapArg,
    /// Run one request and print its JSON answer, e.g. "stats", "ls /etc",
    /// "stat /bin/sh", "blobs", "chunk /usr/bin/env", "icheck 130".
    #[arg(short = 'R', long)]
    pub request: Option<String>,
}

#[derive(Args, Debug)]
pub struct UnpackArgs {
    #[command(flatten)]
    pub image: BootstrapArg,
    /// The data blob file (single-blob images).
    #[arg(short = 'b', long, conflicts_with = "blob_dir")]
    pub blob: Option<PathBuf>,
    /// Directory holding the data blobs by id.
    #[arg(short = 'D', long)]
    pub blob_dir: Option<PathBuf>,
    /// Tar file to write.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Export a raw EROFS block disk (the only export kind).
    #[arg(long)]
    pub block: bool,
    /// Bootstrap to export.
    #[arg(short = 'B', long)]
    pub bootstrap: PathBuf,
    /// Directory holding the data blobs by id.
    #[arg(short = 'D', long)]
    pub blob_dir: Option<PathBuf>,
    /// The data blob file (single-blob images).
    #[arg(short = 'b', long, conflicts_with = "blob_dir")]
    pub blob: Option<PathBuf>,
    /// Disk file to write (default: BOOTSTRAP.disk).
    #[arg(short = 'O', long)]
    pub output: Option<PathBuf>,
}

/// `compact` (upstream's flags, plus `--config` for a `compact.json`).
#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Bootstrap of the image to compact.
    #[arg(short = 'B', long)]
    pub bootstrap: PathBuf,
    /// compact.json: min_used_ratio, compact_blob_size, max_compact_size,
    /// layers_to_compact, blobs_dir (the flags below override its values).
    #[arg(short = 'C', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write the new bootstrap (default: BOOTSTRAP with its
    /// extension replaced by `.bootstrap.compact`, as upstream).
    #[arg(short = 'O', long)]
    pub output_bootstrap: Option<PathBuf>,
    /// Directory holding the image's blobs by id; the new blobs are written
    /// to it (overrides blobs_dir).
    #[arg(short = 'D', long)]
    pub blob_dir: Option<PathBuf>,
    /// Rewrite blobs whose used ratio is below this percentage (0-100; 0,
    /// the default, disables it).
    #[arg(long, value_name = "PERCENT")]
    pub min_used_ratio: Option<u8>,
    /// Merge blobs smaller than this many bytes (default 10485760).
    #[arg(long, value_name = "BYTES")]
    pub compact_blob_size: Option<u64>,
    /// A merged blob holds at most this many bytes of chunk data (default 104857600).
    #[arg(long, value_name = "BYTES")]
    pub max_compact_size: Option<u64>,
    /// Compact only when the image has at least this many blobs (0, the
    /// default: always).
    #[arg(long, value_name = "N")]
    pub layers_to_compact: Option<usize>,
    /// Chunk dictionary (`bootstrap=DICT` or DICT): its blobs are shared with
    /// other images and never rewritten or merged.
    #[arg(long, value_name = "bootstrap=DICT")]
    pub chunk_dict: Option<String>,
    /// Read source blobs missing from the blob directory from this backend.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub backend_type: Option<BackendTypeArg>,
    /// The backend's settings as JSON (as for `create --backend-config`).
    #[arg(long, value_name = "JSON", requires = "backend_type", conflicts_with = "backend_config_file")]
    pub backend_config: Option<String>,
    /// Read the backend's settings (JSON) from this file.
    #[arg(long, value_name = "FILE", requires = "backend_type")]
    pub backend_config_file: Option<PathBuf>,
    /// Write a JSON report of what was done to this file.
    #[arg(short = 'J', long)]
    pub output_json: Option<PathBuf>,
}
