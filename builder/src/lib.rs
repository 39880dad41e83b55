//! # nydus-builder
//!
//! Builds RAFS v6 images (bootstrap + data blob) from directories or OCI
//! layer tars (plain or gzip, streamed without unpacking), also as
//! a layer on top of a parent image (`--parent-bootstrap`), with chunks
//! shared with a dictionary image (`--chunk-dict`); merges per-layer
//! bootstraps into one image (`merge`); rewrites an image's blobs into
//! fewer, fuller ones (`compact`); and reads
//! them back: validation (`check`), statistics with dedup figures
//! (`stat`), interactive inspection (`inspect`), conversion to a tar
//! (`unpack`) and to a raw EROFS disk (`export --block`). The `nydus-image` binary is a thin CLI over
//! these functions.
#![deny(missing_docs)]

pub mod blob;
pub mod blobfile;
pub mod chunkdict;
pub mod compact;
pub mod compact_plan;
pub mod create;
pub mod dirwalk;
pub mod error;
pub mod export;
pub mod image;
pub mod inspect;
pub mod merge;
pub mod parent;
pub mod stargz;
pub mod stargz_toc;
pub mod stat;
mod tar_sparse;
pub mod tarball;
pub mod tree;
pub mod unpack;

pub use error::{BuildError, Result};
