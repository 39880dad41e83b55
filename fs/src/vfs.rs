//! Serving images under `fuse-backend-rs`'s [`Vfs`](fuse_backend_rs::api::Vfs), and swapping
//! the image behind a live mount.
//!
//! # Inode numbers and image generations
//!
//! A mount can be *remounted*: its bootstrap replaced while processes still hold files of
//! the old image open. The kernel knows files by inode number only, so numbers handed out
//! for the old image must never resolve to a file of the new one. Each image a [`RafsFs`]
//! serves is a *generation*; the inode numbers it gives the kernel are
//!
//! ```text
//!   bits 55..40: generation (the first image is generation 0, so a mount that is never
//!                swapped exposes the plain RAFS inode numbers)
//!   bits 39..0 : the inode number inside that image (a RAFS v6 nid, i.e. a metadata
//!                offset / 32, so images up to 32 TiB of metadata)
//! ```
//!
//! Bits 63..56 stay free for the [`Vfs`](fuse_backend_rs::api::Vfs) filesystem index. The root
//! (inode 1) is the exception: it always means the current image's root, so the mountpoint
//! itself keeps working across swaps.
//!
//! Old generations stay loaded while the kernel still holds inodes of theirs: every entry
//! handed out by `lookup`/`readdirplus` adds one to its generation's count, every `forget`
//! subtracts, and a retired generation whose count reaches zero is dropped. An inode of a
//! generation that is gone answers `ESTALE`, a clean error rather than another file's bytes.

use std::any::Any;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use fuse_backend_rs::api::filesystem::Entry;
use fuse_backend_rs::api::{BackendFileSystem, VFS_MAX_INO};

use crate::fuse::RafsFs;
use crate::passthrough::{BackingFiles, Passthrough, Settings};
use crate::push::{PageCacheStore, Pusher};
use crate::rafs::{Rafs, ROOT_INO};

/// Position of the generation in an exposed inode number.
const GEN_SHIFT: u32 = 40;
/// Inode numbers inside one image must fit below the generation bits.
const LOCAL_MASK: u64 = (1 << GEN_SHIFT) - 1;
/// Generations wrap at this count (16 bits, below the Vfs index byte).
const GEN_LIMIT: u64 = (VFS_MAX_INO + 1) >> GEN_SHIFT;

/// One image served by a [`RafsFs`] and the kernel's references to its inodes.
pub struct Generation {
    gen: u64,
    rafs: Arc<Rafs>,
    refs: AtomicU64,
}

impl Generation {
    /// The image.
    pub fn rafs(&self) -> &Arc<Rafs> {
        &self.rafs
    }

    /// The generation number.
    pub fn number(&self) -> u64 {
        self.gen
    }

    /// Inode number exposed to the kernel for the image's own inode number `local`.
    pub fn outer(&self, local: u64) -> io::Result<u64> {
        encode(self.gen, local)
    }

    pub(crate) fn add_refs(&self, n: u64) {
        self.refs.fetch_add(n, Ordering::Relaxed);
    }
}

struct Gens {
    current: Arc<Generation>,
    /// Replaced generations the kernel may still reference.
    retired: Vec<Arc<Generation>>,
}

/// The images behind one mount: the current one and the replaced ones still in use.
/// Shared between the [`RafsFs`] and whoever swaps its image (the daemon).
pub struct ImageSet {
    gens: ArcSwap<Gens>,
    /// Pushes cached data into the kernel's page cache, when the transport can.
    push: OnceLock<Pusher>,
    /// Answers opens, passing large cached files through, when the transport can.
    passthrough: OnceLock<Passthrough>,
}

impl ImageSet {
    /// A set serving `rafs` as generation 0.
    pub fn new(rafs: Arc<Rafs>) -> Self {
        let current = Arc::new(Generation { gen: 0, rafs, refs: AtomicU64::new(0) });
        Self {
            gens: ArcSwap::from_pointee(Gens { current, retired: Vec::new() }),
            push: OnceLock::new(),
            passthrough: OnceLock::new(),
        }
    }

    /// Push cached file data into the kernel's page cache through `store`
    /// (see [`crate::push`]); the kernel knows exposed inode `ino` as
    /// `nodeid_base | ino`. Only the first call has an effect.
    pub fn enable_push(self: &Arc<Self>, store: Arc<dyn PageCacheStore>, nodeid_base: u64) -> io::Result<()> {
        if self.push.get().is_none() {
            let p = Pusher::start(self, store, nodeid_base)?;
            let _ = self.push.set(p);
        }
        Ok(())
    }

    /// The pusher, if enabled.
    pub fn pusher(&self) -> Option<&Pusher> {
        self.push.get()
    }

    /// Answer opens (instead of letting the kernel skip them) and pass large
    /// files wholly in the blob cache through to copies (see
    /// [`crate::passthrough`]). Only the first call has an effect.
    pub fn enable_passthrough(self: &Arc<Self>, backing: Arc<dyn BackingFiles>, settings: Settings) -> io::Result<()> {
        if self.passthrough.get().is_none() {
            let p = Passthrough::start(self, backing, settings)?;
            let _ = self.passthrough.set(p);
        }
        Ok(())
    }

    /// The passthrough state, if enabled.
    pub fn passthrough(&self) -> Option<&Passthrough> {
        self.passthrough.get()
    }

    /// The image new lookups resolve against.
    pub fn current(&self) -> Arc<Rafs> {
        self.gens.load().current.rafs.clone()
    }

    /// Generations kept alive besides the current one.
    pub fn retired_count(&self) -> usize {
        self.gens.load().retired.len()
    }

    /// Make `rafs` the current image; the previous one is kept until the kernel forgets its
    /// inodes. Returns the new generation number.
    pub fn swap(&self, rafs: Arc<Rafs>) -> u64 {
        let mut out = 0;
        self.gens.rcu(|g| {
            let mut gen = (g.current.gen + 1) % GEN_LIMIT;
            // Skip numbers still in use after a wrap.
            while g.retired.iter().any(|r| r.gen == gen) {
                gen = (gen + 1) % GEN_LIMIT;
            }
            out = gen;
            let mut retired: Vec<_> = g.retired.clone();
            if g.current.refs.load(Ordering::Relaxed) > 0 {
                retired.push(g.current.clone());
            }
            let current = Arc::new(Generation { gen, rafs: rafs.clone(), refs: AtomicU64::new(0) });
            Gens { current, retired }
        });
        out
    }

    /// The generation and image-local inode number behind an exposed inode number.
    /// Calls `f` without cloning the generation's `Arc` (the hot path).
    #[inline]
    pub fn with<T>(&self, ino: u64, f: impl FnOnce(&Generation, u64) -> io::Result<T>) -> io::Result<T> {
        let g = self.gens.load();
        if ino == ROOT_INO {
            return f(&g.current, ROOT_INO);
        }
        let (gen, local) = decode(ino);
        if g.current.gen == gen {
            return f(&g.current, local);
        }
        match g.retired.iter().find(|r| r.gen == gen) {
            Some(r) => f(r, local),
            None => Err(io::Error::from_raw_os_error(libc::ESTALE)),
        }
    }

    /// The kernel dropped `count` references to `ino`.
    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT_INO || ino == 0 {
            return;
        }
        let gen = decode(ino).0;
        let g = self.gens.load();
        let done = if g.current.gen == gen {
            dec(&g.current.refs, count);
            false
        } else {
            match g.retired.iter().find(|r| r.gen == gen) {
                Some(r) => dec(&r.refs, count) == 0,
                None => false,
            }
        };
        drop(g);
        if done {
            self.gens.rcu(|g| Gens {
                current: g.current.clone(),
                retired: g
                    .retired
                    .iter()
                    .filter(|r| r.gen != gen || r.refs.load(Ordering::Relaxed) > 0)
                    .cloned()
                    .collect(),
            });
            tracing::debug!(generation = gen, "replaced image released: the kernel forgot all its inodes");
        }
    }
}

/// Exposed inode number of image-local inode `local` in generation `gen`.
fn encode(gen: u64, local: u64) -> io::Result<u64> {
    if local == ROOT_INO {
        return Ok(ROOT_INO);
    }
    if local > LOCAL_MASK || local == 0 {
        return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    Ok(gen << GEN_SHIFT | local)
}

/// (generation, image-local inode number) of an inode number exposed by a [`RafsFs`]
/// (the Vfs index byte, if any, already removed).
pub fn decode(ino: u64) -> (u64, u64) {
    ((ino >> GEN_SHIFT) % GEN_LIMIT, ino & LOCAL_MASK)
}

/// Subtract without wrapping below zero; returns the new value.
fn dec(a: &AtomicU64, n: u64) -> u64 {
    let mut cur = a.load(Ordering::Relaxed);
    loop {
        let new = cur.saturating_sub(n);
        match a.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return new,
            Err(v) => cur = v,
        }
    }
}

impl BackendFileSystem for RafsFs {
    /// The root entry and the largest inode number this filesystem hands out.
    fn mount(&self) -> io::Result<(Entry, u64)> {
        let entry = self.root_entry()?;
        Ok((entry, VFS_MAX_INO))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dec_saturates() {
        let a = AtomicU64::new(3);
        assert_eq!(dec(&a, 2), 1);
        assert_eq!(dec(&a, 5), 0);
    }

    #[test]
    fn inode_numbers_round_trip_and_leave_the_vfs_index_free() {
        assert_eq!(GEN_LIMIT, 1 << 16);
        for (gen, local) in [(0, 2), (1, 77), (GEN_LIMIT - 1, LOCAL_MASK)] {
            let ino = encode(gen, local).unwrap();
            assert!(ino <= VFS_MAX_INO);
            assert_eq!(decode(ino), (gen, local));
        }
        // Generation 0 exposes the image's own numbers, and the root is shared.
        assert_eq!(encode(0, 12345).unwrap(), 12345);
        assert_eq!(encode(9, ROOT_INO).unwrap(), ROOT_INO);
        assert!(encode(1, LOCAL_MASK + 1).is_err());
    }

    /// An image whose root holds `pad` (a symlink, only in some images, so that `x` gets
    /// different nids) and `x`, a symlink to `target`.
    fn image(dir: &std::path::Path, target: &[u8], pad: bool) -> Arc<Rafs> {
        use nydus_format::writer::{libc_ifmt as ifmt, write_bootstrap, ImageSpec, NodeSpec};
        let link = |name: &[u8], to: &[u8], ino| NodeSpec {
            name: name.to_vec(),
            mode: ifmt::S_IFLNK | 0o777,
            ino,
            size: to.len() as u64,
            symlink: to.to_vec(),
            ..Default::default()
        };
        let mut nodes = vec![NodeSpec { mode: ifmt::S_IFDIR | 0o755, ino: 1, ..Default::default() }];
        if pad {
            nodes.push(link(b"pad", &[b'p'; 200], 3));
        }
        nodes.push(link(b"x", target, 2));
        nodes[0].children = (1..nodes.len()).collect();
        let spec = ImageSpec {
            chunk_size: 1 << 20,
            compressor: nydus_format::Compressor::None,
            digester: nydus_format::Digester::default(),
            nodes,
            blobs: vec![],
            prefetch: vec![],
        };
        let boot = nydus_format::reader::Bootstrap::parse(write_bootstrap(&spec).unwrap()).unwrap();
        let cache = nydus_storage::BlobCacheManager::new(
            nydus_storage::testutil::cache_config(&dir.join(String::from_utf8_lossy(target).as_ref())),
            nydus_storage::testutil::localfs(dir),
        )
        .unwrap();
        Arc::new(Rafs::new(boot, &cache, crate::FsConfig::default()).unwrap())
    }

    #[test]
    fn swapped_images_keep_old_inodes_until_forgotten() {
        use fuse_backend_rs::api::filesystem::{Context, FileSystem};
        let dir = tempfile::tempdir().unwrap();
        let fs = RafsFs::new(image(dir.path(), b"old", false));
        let name = std::ffi::CString::new("x").unwrap();
        let old = fs.lookup(&Context::new(), ROOT_INO, &name).unwrap().inode;
        assert_eq!(decode(old).0, 0);
        assert_eq!(fs.readlink(&Context::new(), old).unwrap(), b"old");

        assert_eq!(fs.images().swap(image(dir.path(), b"new", true)), 1);
        assert_eq!(fs.images().retired_count(), 1);
        // The old inode still reads the old image; a new lookup gets the new one.
        assert_eq!(fs.readlink(&Context::new(), old).unwrap(), b"old");
        let new = fs.lookup(&Context::new(), ROOT_INO, &name).unwrap().inode;
        assert_eq!(decode(new).0, 1);
        assert_ne!(new, old);
        assert_eq!(fs.readlink(&Context::new(), new).unwrap(), b"new");
        // Once the kernel forgets the old inode, the old image is released and its
        // numbers answer ESTALE instead of resolving to anything else.
        fs.forget(&Context::new(), old, 1);
        assert_eq!(fs.images().retired_count(), 0);
        let e = fs.readlink(&Context::new(), old).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
        assert_eq!(fs.readlink(&Context::new(), new).unwrap(), b"new");
        // A swap with nothing looked up keeps no old generation.
        fs.forget(&Context::new(), new, 1);
        fs.images().swap(image(dir.path(), b"third", false));
        assert_eq!(fs.images().retired_count(), 0);
    }
}
