//! A full traversal of a bootstrap through every reader entry point, for
//! robustness tests and fuzzing: whatever the bytes, it must return (errors
//! are fine, panics, hangs and huge allocations are not).

use nydus_format::reader::{Bootstrap, Inode};
use nydus_format::FormatError;

/// What a traversal saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// The bootstrap parsed.
    pub parsed: bool,
    /// Names reported by `walk`.
    pub entries: usize,
    /// Errors met while walking reachable data (0 for a valid image).
    pub errors: usize,
}

/// Stop walking after this many names (bounds the work on huge inputs).
const MAX_ENTRIES: usize = 200_000;
/// Chunk records looked up per file.
const MAX_CHUNK_LOOKUPS: usize = 256;
/// Inodes probed by nid sweep.
const MAX_SWEEP: u64 = 4096;

/// Run every reader entry point over `bytes`.
pub fn traverse(bytes: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let _ = nydus_format::reader::detect_version(bytes);
    let boot = match Bootstrap::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            let _ = e.to_string();
            return o;
        }
    };
    o.parsed = true;
    for b in &boot.blobs {
        let _ = b.data_supported();
        let _ = b.ci_descriptor();
    }

    let mut paths: Vec<String> = Vec::new();
    let mut errors = 0;
    let walked = boot.walk(|path, _entry, ino| {
        o.entries += 1;
        if o.entries > MAX_ENTRIES {
            return Err(FormatError::Encode("entry limit reached".into()));
        }
        errors += visit(&boot, ino);
        if paths.len() < 64 {
            paths.push(String::from_utf8_lossy(path).into_owned());
        }
        Ok(())
    });
    errors += count(walked);
    errors += count(boot.chunk_records());
    match boot.prefetch_nids() {
        Ok(nids) => {
            for nid in nids.into_iter().take(1024) {
                match boot.inode(nid) {
                    Ok(ino) => errors += visit(&boot, &ino),
                    Err(_) => errors += 1,
                }
            }
        }
        Err(_) => errors += 1,
    }
    for p in &paths {
        errors += count(boot.lookup_path(p));
    }
    for p in ["/", "//./", "/does/not/exist", "/a/../b"] {
        let _ = boot.lookup_path(p);
    }
    o.errors = errors;

    // Probe inodes at every slot of the first blocks: exercises decoding at
    // offsets the tree does not reach. Errors here are expected.
    let slots = (bytes.len() as u64 / 32).min(MAX_SWEEP);
    for nid in (0..slots).chain([u64::MAX, u64::MAX / 32, 1 << 40]) {
        if let Ok(ino) = boot.inode(nid) {
            visit(&boot, &ino);
        }
    }
    o
}

fn count<T>(r: Result<T, FormatError>) -> usize {
    match r {
        Ok(_) => 0,
        Err(e) => {
            let _ = e.to_string();
            1
        }
    }
}

/// Read everything an inode has; returns the number of errors.
fn visit<B: AsRef<[u8]>>(boot: &Bootstrap<B>, ino: &Inode) -> usize {
    let _ = (ino.kind(), ino.rdev(), ino.inode_size());
    let mut errors = count(boot.xattrs(ino));
    if ino.is_dir() {
        match boot.read_dir(ino) {
            Ok(entries) => {
                if let Some(e) = entries.last() {
                    errors += count(boot.lookup(ino, &e.name));
                }
                let _ = boot.lookup(ino, b"~no such name~");
            }
            Err(_) => errors += 1,
        }
    } else if ino.is_symlink() {
        errors += count(boot.readlink(ino));
    } else if ino.is_reg() {
        match boot.chunks(ino) {
            Ok(chunks) => {
                for c in chunks.iter().take(MAX_CHUNK_LOOKUPS) {
                    errors += count(boot.chunk_info(c));
                }
            }
            Err(_) => errors += 1,
        }
    }
    let _ = boot.data(ino);
    errors
}
