//! Chunk dictionaries (`create --chunk-dict bootstrap=DICT`).
//!
//! A dictionary is any image's bootstrap: every chunk it references is
//! known by digest, so a build whose data contains one of them records a
//! reference into the dictionary's blob instead of storing the chunk again.
//! The dictionary's blobs that end up referenced join the new image's blob
//! table, after the parent's blobs and before the build's own blob; they
//! must be readable by nydusd from the same backend as the image's blobs.
//!
//! During chunking the final blob table is not known yet (only the
//! dictionary blobs actually used are kept), so dictionary blob `i` first
//! gets the tentative index `parent blobs + i` and the build's own blob the
//! index after all of them; [`ChunkDict::settle`] renumbers afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nydus_format::writer::{BlobSpec, ChunkSpec};
use nydus_format::Digest;

use crate::blob::ChunkOptions;
use crate::error::{BuildError, Result};
use crate::image::load;
use crate::parent::{blob_spec, chunk_map};
use crate::tree::Tree;

/// A loaded chunk dictionary.
#[derive(Debug, Clone)]
pub struct ChunkDict {
    /// The dictionary bootstrap.
    pub path: PathBuf,
    /// Its blob table.
    pub blobs: Vec<BlobSpec>,
    /// Its chunks by digest; `blob_index` indexes [`ChunkDict::blobs`].
    pub chunks: HashMap<Digest, ChunkSpec>,
}

/// Parse upstream's `--chunk-dict` value: `bootstrap=PATH`, or a plain path.
pub fn parse_chunk_dict_arg(arg: &str) -> Result<PathBuf> {
    let path = match arg.split_once('=') {
        Some(("bootstrap", p)) => p,
        // A '/' before the '=' means the '=' is part of a path.
        Some((kind, _)) if !kind.contains('/') => {
            return Err(BuildError::Invalid(format!(
                "--chunk-dict {arg:?}: unknown dictionary type {kind:?}; use bootstrap=PATH (or a plain PATH)"
            )))
        }
        _ => arg,
    };
    if path.is_empty() {
        return Err(BuildError::Invalid(format!("--chunk-dict {arg:?}: no path given; use bootstrap=PATH")));
    }
    Ok(PathBuf::from(path))
}

fn dict_error(path: &Path, reason: String) -> BuildError {
    BuildError::ChunkDict { path: path.into(), reason }
}

/// Load the dictionary at `path` for a build with `opts`: chunk size and
/// digester must match (digests of another algorithm or chunks cut at other
/// boundaries never match); the compressor may differ (it is per blob).
pub fn load_chunk_dict(path: &Path, opts: &ChunkOptions) -> Result<ChunkDict> {
    let boot = load(path)?;
    if boot.sb.chunk_size != opts.chunk_size {
        return Err(dict_error(
            path,
            format!(
                "its chunk size is {:#x}, this build uses {:#x}; pass --chunk-size {:#x}",
                boot.sb.chunk_size, opts.chunk_size, boot.sb.chunk_size
            ),
        ));
    }
    if boot.sb.digester != opts.digester {
        return Err(dict_error(
            path,
            format!(
                "its chunks are digested with {}, this build uses {}; pass --digester {}",
                boot.sb.digester.name(),
                opts.digester.name(),
                boot.sb.digester.name()
            ),
        ));
    }
    let blobs = boot.blobs.iter().map(|b| blob_spec(b).map_err(|m| dict_error(path, m))).collect::<Result<Vec<_>>>()?;
    let chunks = chunk_map(&boot).map_err(|e| BuildError::format(path, e))?;
    if chunks.is_empty() {
        tracing::warn!(dict = %path.display(), "the chunk dictionary holds no chunks");
    }
    Ok(ChunkDict { path: path.into(), blobs, chunks })
}

impl ChunkDict {
    /// Add the dictionary's chunks to `known` (digests already known, e.g.
    /// from the parent, keep their chunk). A dictionary blob already in
    /// `table` (same id) keeps its index there; dictionary blob `i` otherwise
    /// gets the tentative index `table.len() + i`. Returns the number of
    /// tentative indexes taken, i.e. the build's own blob gets
    /// `table.len() + returned value`.
    pub fn add_known(&self, table: &[BlobSpec], known: &mut HashMap<Digest, ChunkSpec>) -> u32 {
        let first = table.len() as u32;
        let index: Vec<u32> = self
            .blobs
            .iter()
            .enumerate()
            .map(|(i, b)| table.iter().position(|t| t.blob_id == b.blob_id).map_or(first + i as u32, |p| p as u32))
            .collect();
        for c in self.chunks.values() {
            if let Some(&blob_index) = index.get(c.blob_index as usize) {
                known.entry(c.digest).or_insert(ChunkSpec { blob_index, ..*c });
            }
        }
        self.blobs.len() as u32
    }

    /// After chunking `tree` (the new layer only): append the dictionary
    /// blobs it references to `table` and give its chunks their final blob
    /// indexes. `own` is the tentative index of the build's own blob; its
    /// final index (`table.len()` on return) is returned.
    pub fn settle(&self, tree: &mut Tree, table: &mut Vec<BlobSpec>, own: u32) -> u32 {
        let first = table.len() as u32;
        let mut used = vec![false; self.blobs.len()];
        for c in tree.inodes.iter().flat_map(|i| &i.meta.chunks) {
            if (first..own).contains(&c.blob_index) {
                used[(c.blob_index - first) as usize] = true;
            }
        }
        let mut map = vec![u32::MAX; self.blobs.len()];
        for (i, b) in self.blobs.iter().enumerate().filter(|(i, _)| used[*i]) {
            map[i] = table.len() as u32;
            table.push(b.clone());
        }
        let own_final = table.len() as u32;
        for c in tree.inodes.iter_mut().flat_map(|i| i.meta.chunks.iter_mut()) {
            if (first..own).contains(&c.blob_index) {
                c.blob_index = map[(c.blob_index - first) as usize];
            } else if c.blob_index == own {
                c.blob_index = own_final;
            }
        }
        if used.iter().any(|u| *u) {
            tracing::info!(
                dict = %self.path.display(),
                blobs = used.iter().filter(|u| **u).count(),
                "chunk dictionary blobs referenced"
            );
        }
        own_final
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Inode;
    use nydus_format::writer::{libc_ifmt, NodeSpec};

    #[test]
    fn chunk_dict_arg_forms() {
        assert_eq!(parse_chunk_dict_arg("bootstrap=/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(parse_chunk_dict_arg("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(parse_chunk_dict_arg("/a=b/c").unwrap(), PathBuf::from("/a=b/c"));
        let e = parse_chunk_dict_arg("blobs=/x").unwrap_err().to_string();
        assert!(e.contains("unknown dictionary type \"blobs\""), "{e}");
        assert!(parse_chunk_dict_arg("bootstrap=").is_err());
    }

    fn blob(id: &str) -> BlobSpec {
        BlobSpec {
            blob_id: id.into(),
            chunk_count: 1,
            compressor: nydus_format::Compressor::None,
            digester: nydus_format::Digester::Blake3,
            features: 0,
            compressed_size: 0,
            uncompressed_size: 0,
            ci_compressor: nydus_format::Compressor::None,
            ci_offset: 0,
            ci_compressed_size: 0,
            ci_uncompressed_size: 0,
        }
    }

    fn chunk(blob_index: u32, d: u8) -> ChunkSpec {
        ChunkSpec {
            blob_index,
            ci_index: 0,
            digest: [d; 32],
            flags: 0,
            compressed_offset: 0,
            compressed_size: 1,
            uncompressed_offset: 0,
            uncompressed_size: 1,
            file_offset: 0,
            crc32: 0,
        }
    }

    #[test]
    fn only_referenced_dict_blobs_are_kept() {
        let dict = ChunkDict {
            path: "d".into(),
            blobs: vec![blob("x"), blob("p"), blob("y")],
            chunks: [chunk(0, 1), chunk(1, 2), chunk(2, 3)].into_iter().map(|c| (c.digest, c)).collect(),
        };
        let mut table = vec![blob("p")];
        let mut known = HashMap::new();
        let taken = dict.add_known(&table, &mut known);
        assert_eq!(taken, 3);
        // "p" is already the parent's blob 0; "x" and "y" are tentative 1 and 3.
        assert_eq!(known[&[1; 32]].blob_index, 1);
        assert_eq!(known[&[2; 32]].blob_index, 0);
        assert_eq!(known[&[3; 32]].blob_index, 3);
        let own = table.len() as u32 + taken;
        let file = |chunks| Inode {
            meta: NodeSpec { mode: libc_ifmt::S_IFREG | 0o644, chunks, ..Default::default() },
            source: None,
        };
        let root = Inode { meta: NodeSpec { mode: libc_ifmt::S_IFDIR | 0o755, ..Default::default() }, source: None };
        let mut tree = Tree::new(root);
        tree.add(0, b"f".to_vec(), file(vec![known[&[3; 32]], known[&[2; 32]], chunk(own, 9)]));
        let own_final = dict.settle(&mut tree, &mut table, own);
        assert_eq!(table.iter().map(|b| b.blob_id.as_str()).collect::<Vec<_>>(), ["p", "y"]);
        assert_eq!(own_final, 2);
        let got: Vec<u32> = tree.inodes[1].meta.chunks.iter().map(|c| c.blob_index).collect();
        assert_eq!(got, [1, 0, 2]);
    }
}
