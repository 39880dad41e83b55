//! # nydus-fs
//!
//! The RAFS filesystem. [`rafs::Rafs`] serves one image — names, attributes,
//! xattrs and file data fetched chunk by chunk through `nydus-storage`'s blob
//! cache — without knowing how requests arrive. [`fuse::RafsFs`] implements
//! `fuse-backend-rs`'s `FileSystem` trait on top of it, which serves both
//! `/dev/fuse` sessions and virtiofs queues. The image is read-only: every
//! mutation answers EROFS.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod fuse;
pub mod metrics;
pub mod passthrough;
pub mod push;
pub mod rafs;
pub mod vfs;

pub use config::FsConfig;
pub use error::{FsError, Result};
pub use fuse::RafsFs;
pub use rafs::Rafs;
pub use vfs::ImageSet;

/// Lock `m`, carrying on past a panic of another holder (the tables behind
/// these locks stay consistent between statements).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
