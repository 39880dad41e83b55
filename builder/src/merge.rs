//! `nydus-image merge`: per-layer bootstraps → one image bootstrap.
//!
//! Each source is the bootstrap of one layer built on its own (no
//! `--parent-bootstrap`) with `--whiteout-spec none`, so that its whiteouts
//! are still ordinary entries. The layers are applied bottom first, each
//! on top of the tree so far (or of `--parent-bootstrap`), with overlayfs
//! semantics: the layer's whiteout entries, interpreted per the merge's
//! `--whiteout-spec`, delete or hide lower entries and never reach the
//! result ([`Tree::take_whiteouts`], [`Tree::merge`]).
//!
//! Blobs: every layer has at most one blob of its own; the others it
//! references must come from the chunk dictionary it was built with. The
//! own blob can be renamed (`--blob-digests`, `--original-blob-ids`) and
//! resized (`--blob-sizes`), e.g. to the digest under which a registry
//! serves it. Blobs the merged tree no longer references (everything of a
//! layer deleted above) are left out of the blob table.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use nydus_format::writer::{libc_ifmt, write_bootstrap, BlobSpec, ImageSpec, NodeSpec};
use serde::Serialize;

use crate::blob::ChunkOptions;
use crate::chunkdict::load_chunk_dict;
use crate::create::{publish, temp_in};
use crate::error::{BuildError, Result};
use crate::image::load;
use crate::parent::{blob_spec, load_parent, load_tree};
use crate::tree::{Inode, Tree, WhiteoutSpec};

/// Options of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Per-layer bootstraps, lowest layer first.
    pub sources: Vec<PathBuf>,
    /// Output bootstrap.
    pub bootstrap: PathBuf,
    /// Image the layers go on top of.
    pub parent_bootstrap: Option<PathBuf>,
    /// The chunk dictionary the layers were built with: its blobs are not
    /// any layer's own blob.
    pub chunk_dict: Option<PathBuf>,
    /// Per source: the id (hex SHA-256, `sha256:` prefix allowed) to give
    /// its own blob.
    pub blob_digests: Option<Vec<String>>,
    /// Per source: an id to give its own blob (`blob_digests` wins).
    pub original_blob_ids: Option<Vec<String>>,
    /// Per source: the size to record for its own blob.
    pub blob_sizes: Option<Vec<u64>>,
    /// How whiteout entries of the layers are interpreted.
    pub whiteout: WhiteoutSpec,
}

/// What a merge produced (also the `--output-json` document).
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Bootstrap path.
    pub bootstrap: PathBuf,
    /// Blob ids, in blob-table order.
    pub blobs: Vec<String>,
    /// Blob sizes, in blob-table order.
    pub blob_sizes: Vec<u64>,
    /// RAFS version.
    pub fs_version: u32,
    /// Chunk compressor (of the bootstrap).
    pub compressor: String,
    /// Chunk digester.
    pub digester: String,
    /// Chunk size.
    pub chunk_size: u32,
    /// Layers merged.
    pub layers: usize,
    /// Names in the tree (incl. the root and every hard-link name).
    pub inodes: u64,
    /// Whiteout entries applied.
    pub whiteouts: u64,
    /// Bootstrap size.
    pub bootstrap_size: u64,
}

fn check_lists(opts: &MergeOptions) -> Result<()> {
    let n = opts.sources.len();
    if n == 0 {
        return Err(BuildError::Invalid("no source bootstrap: pass one per layer, lowest first".into()));
    }
    let lens = [
        ("--blob-digests", opts.blob_digests.as_ref().map(Vec::len)),
        ("--original-blob-ids", opts.original_blob_ids.as_ref().map(Vec::len)),
        ("--blob-sizes", opts.blob_sizes.as_ref().map(Vec::len)),
    ];
    for (flag, len) in lens {
        if let Some(l) = len.filter(|&l| l != n) {
            return Err(BuildError::Invalid(format!(
                "{flag} has {l} entries for {n} source bootstraps; give one per source"
            )));
        }
    }
    Ok(())
}

/// A blob id given as a layer digest: 64 hex digits, optionally `sha256:`.
fn digest_id(s: &str) -> Result<String> {
    let h = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BuildError::Invalid(format!("--blob-digests {s:?}: not a SHA-256 digest (64 hex digits)")));
    }
    Ok(h.to_ascii_lowercase())
}

fn plain_id(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BuildError::Invalid(format!(
            "--original-blob-ids {s:?}: a blob id is 1..=64 printable ASCII characters"
        )));
    }
    Ok(s.into())
}

/// The merged blob table, deduplicated by blob id.
struct Table {
    blobs: Vec<BlobSpec>,
}

impl Table {
    fn index_of(&mut self, b: BlobSpec) -> u32 {
        match self.blobs.iter().position(|t| t.blob_id == b.blob_id) {
            Some(i) => i as u32,
            None => {
                self.blobs.push(b);
                self.blobs.len() as u32 - 1
            }
        }
    }
}

/// Merge the layers of `opts` and write the bootstrap (atomically).
pub fn merge(opts: &MergeOptions) -> Result<MergeReport> {
    check_lists(opts)?;
    let first = load(&opts.sources[0])?;
    let chunk = ChunkOptions {
        chunk_size: first.sb.chunk_size,
        compressor: first.sb.compressor,
        digester: first.sb.digester,
        threads: 1,
    };
    let (mut tree, blobs) = match &opts.parent_bootstrap {
        Some(p) => {
            let p = load_parent(p, &chunk)?;
            (p.tree, p.blobs)
        }
        None => {
            let root = NodeSpec { mode: libc_ifmt::S_IFDIR | 0o755, ..Default::default() };
            (Tree::new(Inode { meta: root, source: None }), Vec::new())
        }
    };
    let mut table = Table { blobs };
    let dict_ids: HashSet<String> = match &opts.chunk_dict {
        Some(d) => load_chunk_dict(d, &chunk)?.blobs.into_iter().map(|b| b.blob_id).collect(),
        None => HashSet::new(),
    };
    let mut whiteouts = 0;
    for (i, src) in opts.sources.iter().enumerate() {
        let boot = if i == 0 { None } else { Some(load(src)?) };
        let boot = boot.as_ref().unwrap_or(&first);
        if boot.sb.chunk_size != chunk.chunk_size || boot.sb.digester != chunk.digester {
            return Err(BuildError::Invalid(format!(
                "{}: chunk size {:#x} and digester {} differ from {} ({:#x}, {}); the layers of one image must share --chunk-size and --digester",
                src.display(),
                boot.sb.chunk_size,
                boot.sb.digester.name(),
                opts.sources[0].display(),
                chunk.chunk_size,
                chunk.digester.name()
            )));
        }
        let own = boot.blobs.iter().filter(|b| !dict_ids.contains(&b.blob_id)).count();
        if own > 1 {
            return Err(BuildError::Invalid(format!(
                "{}: references {own} blobs outside the chunk dictionary; a per-layer bootstrap has at most one \
                 (build each layer without --parent-bootstrap, and pass merge the --chunk-dict the layers used)",
                src.display()
            )));
        }
        let mut map = Vec::with_capacity(boot.blobs.len());
        for b in &boot.blobs {
            let mut spec = blob_spec(b).map_err(|m| BuildError::Invalid(format!("{}: {m}", src.display())))?;
            if !dict_ids.contains(&b.blob_id) {
                rename(&mut spec, opts, i)?;
            }
            map.push(table.index_of(spec));
        }
        let mut layer = load_tree(boot).map_err(|e| BuildError::format(src, e))?;
        for c in layer.inodes.iter_mut().flat_map(|n| n.meta.chunks.iter_mut()) {
            c.blob_index = *map.get(c.blob_index as usize).ok_or_else(|| {
                BuildError::Invalid(format!(
                    "{}: a chunk references blob {} outside its table",
                    src.display(),
                    c.blob_index
                ))
            })?;
        }
        whiteouts += layer.take_whiteouts(opts.whiteout);
        tree.merge(&layer);
    }
    let mut nodes = tree.to_nodes();
    let blobs = keep_used(&mut nodes, table.blobs);
    let spec = ImageSpec {
        chunk_size: chunk.chunk_size,
        compressor: chunk.compressor,
        digester: chunk.digester,
        nodes,
        blobs,
        prefetch: Vec::new(),
    };
    let boot = write_bootstrap(&spec).map_err(|e| BuildError::Invalid(format!("cannot write bootstrap: {e}")))?;
    write_out(&opts.bootstrap, &boot)?;
    Ok(MergeReport {
        bootstrap: opts.bootstrap.clone(),
        blobs: spec.blobs.iter().map(|b| b.blob_id.clone()).collect(),
        blob_sizes: spec.blobs.iter().map(|b| b.compressed_size).collect(),
        fs_version: 6,
        compressor: chunk.compressor.name().into(),
        digester: chunk.digester.name().into(),
        chunk_size: chunk.chunk_size,
        layers: opts.sources.len(),
        inodes: spec.nodes.len() as u64,
        whiteouts,
        bootstrap_size: boot.len() as u64,
    })
}

/// Apply source `i`'s renaming flags to its own blob.
fn rename(spec: &mut BlobSpec, opts: &MergeOptions, i: usize) -> Result<()> {
    if let Some(id) = opts.original_blob_ids.as_ref().map(|l| &l[i]) {
        spec.blob_id = plain_id(id)?;
    }
    if let Some(d) = opts.blob_digests.as_ref().map(|l| &l[i]) {
        spec.blob_id = digest_id(d)?;
    }
    if let Some(&size) = opts.blob_sizes.as_ref().map(|l| &l[i]) {
        spec.compressed_size = size;
    }
    Ok(())
}

/// Drop blobs no node references (order kept) and renumber the chunks.
fn keep_used(nodes: &mut [NodeSpec], blobs: Vec<BlobSpec>) -> Vec<BlobSpec> {
    let used: HashSet<u32> = nodes.iter().flat_map(|n| n.chunks.iter().map(|c| c.blob_index)).collect();
    let mut map = HashMap::new();
    let mut kept = Vec::new();
    for (i, b) in blobs.into_iter().enumerate() {
        if used.contains(&(i as u32)) {
            map.insert(i as u32, kept.len() as u32);
            kept.push(b);
        } else {
            tracing::info!(blob = %b.blob_id, "blob no longer referenced by the merged tree, left out");
        }
    }
    for c in nodes.iter_mut().flat_map(|n| n.chunks.iter_mut()) {
        c.blob_index = map[&c.blob_index];
    }
    kept
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lengths_must_match_the_sources() {
        let opts =
            MergeOptions { sources: vec!["a".into(), "b".into()], blob_sizes: Some(vec![1]), ..Default::default() };
        let e = check_lists(&opts).unwrap_err().to_string();
        assert_eq!(e, "--blob-sizes has 1 entries for 2 source bootstraps; give one per source");
        assert!(check_lists(&MergeOptions::default()).is_err());
    }

    #[test]
    fn blob_digests_are_sha256() {
        let h = "AB".repeat(32);
        assert_eq!(digest_id(&format!("sha256:{h}")).unwrap(), "ab".repeat(32));
        assert!(digest_id("sha256:12").is_err());
        assert!(plain_id("").is_err());
        assert_eq!(plain_id(" x ").unwrap(), "x");
    }
}
