//! # nydus-format
//!
//! The RAFS v6 on-disk format used by Nydus images: an EROFS filesystem
//! image (the *bootstrap*) whose regular files are lists of chunks stored in
//! separate *data blobs*. This crate owns:
//!
//! * the plain on-disk structures ([`ondisk`]),
//! * validated decoding of a bootstrap ([`reader::Bootstrap`]),
//! * encoding of a bootstrap from a tree description ([`writer`]),
//! * the blob trailer that indexes stored chunks ([`blob_meta`]),
//! * chunk compression and digests ([`codec`]).
//!
//! It does no I/O, starts no threads and has no global state; the builder
//! and the daemon bring their own files and threads. The layout reference is
//! `docs/rafs-v6.md` at the repository root.
#![deny(missing_docs)]

pub mod blob_meta;
pub mod codec;
pub mod dir;
pub mod error;
pub mod flags;
#[allow(missing_docs)]
pub mod ondisk;
pub mod reader;
pub mod v5;
pub mod writer;
pub mod xattr;

pub use codec::{Compressor, Digest, Digester};
pub use error::{FormatError, Result};
pub use reader::Bootstrap;
