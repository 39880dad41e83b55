//! Putting finished blobs into a backend (build time, `nydus-image create
//! --backend-type ...`).
//!
//! Reading ([`super::BlobBackend`]) and writing are separate traits: a
//! daemon never writes, and a builder never needs the cache machinery. A
//! [`BlobUploader`] answers two questions per blob: is it there already
//! (then the upload is skipped), and please store these bytes under this id.
//!
//! Uploaders here: `localfs` (copy into `dir`, atomically) and `registry`
//! (OCI distribution push, see `registry/upload.rs`). Other backends add
//! their arm to [`new_uploader`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::check_blob_id;
use crate::config::{BackendConfig, LocalFsConfig};
use crate::error::{Result, StorageError};

/// Bytes read from the source file per step (and per progress report).
const COPY_STEP: usize = 1 << 20;

/// Something that can store blobs.
pub trait BlobUploader: Send + Sync {
    /// True when the backend already holds blob `blob_id` (the upload is skipped).
    fn blob_exists(&self, blob_id: &str) -> Result<bool>;
    /// Upload `size` bytes of `file` as blob `blob_id`, calling `progress(bytes_done)` as it goes.
    fn upload(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()>;
}

/// Build the uploader for `cfg`. Backends that cannot store blobs (or were
/// not compiled in) are refused with a message naming them.
pub fn new_uploader(cfg: &BackendConfig) -> Result<Box<dyn BlobUploader>> {
    match cfg {
        BackendConfig::LocalFs(c) => Ok(Box::new(LocalFsUploader::new(c)?)),
        #[cfg(feature = "backend-registry")]
        BackendConfig::Registry(c) => Ok(Box::new(super::registry::RegistryUploader::new(c.clone())?)),
        #[cfg(not(feature = "backend-registry"))]
        BackendConfig::Registry(_) => Err(StorageError::BackendConfig(
            "this build has no registry backend (cargo feature `backend-registry`)".into(),
        )),
        #[cfg(feature = "backend-s3")]
        BackendConfig::S3(c) => Ok(Box::new(super::s3::S3Uploader::new(c)?)),
        #[cfg(feature = "backend-oss")]
        BackendConfig::Oss(c) => Ok(Box::new(super::oss::OssUploader::new(c)?)),
        // Backends added later without an uploader yet.
        #[allow(unreachable_patterns)]
        _ => Err(StorageError::BackendConfig("this backend type cannot store blobs (no uploader)".into())),
    }
}

/// Read `len` bytes of `file` at `offset` into `buf` (which is resized),
/// failing on a file that got shorter.
pub(crate) fn read_piece(file: &File, path_hint: &str, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset).map_err(|e| {
        let e = if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::other(format!(
                "the file ended before {} bytes (did it change during the upload?)",
                offset + len as u64
            ))
        } else {
            e
        };
        StorageError::io("reading blob file for upload", path_hint, e)
    })
}

/// Incremental SHA-256 of an uploaded blob, to check it against the id.
#[derive(Default)]
pub(crate) struct DigestCheck(Sha256);

impl DigestCheck {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Hex SHA-256 of everything fed in.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// True for a lower-case 64-hex-digit string (a sha256 digest in hex).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Copies blobs into `dir/<blob id>`: written to a temporary file in the same
/// directory, synced, then renamed into place, so a reader (or a crash)
/// never sees a partial blob under the final name.
#[derive(Debug)]
pub struct LocalFsUploader {
    dir: PathBuf,
}

impl LocalFsUploader {
    /// Needs `dir` (an existing directory); `blob_file` and `alt_dirs` are
    /// read-side settings and cannot receive uploads.
    pub fn new(cfg: &LocalFsConfig) -> Result<Self> {
        let Some(dir) = &cfg.dir else {
            return Err(StorageError::BackendConfig(
                "localfs upload needs `dir`, the directory receiving the blob".into(),
            ));
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(Self { dir: dir.clone() }),
            Ok(_) => Err(StorageError::BackendConfig(format!("localfs: dir {} is not a directory", dir.display()))),
            Err(e) => Err(StorageError::io("opening localfs dir (create it first)", dir, e)),
        }
    }

    fn dest(&self, blob_id: &str) -> Result<PathBuf> {
        check_blob_id(blob_id)?;
        Ok(self.dir.join(blob_id))
    }
}

/// The size of the regular file at `p`, or `None` when there is none.
fn existing_size(p: &Path) -> Result<Option<u64>> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Err(StorageError::io("inspecting", p, io::Error::other("exists and is not a regular file"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("inspecting", p, e)),
    }
}

impl BlobUploader for LocalFsUploader {
    fn blob_exists(&self, blob_id: &str) -> Result<bool> {
        // An empty file is a leftover, not a blob (blobs are never empty).
        Ok(existing_size(&self.dest(blob_id)?)?.is_some_and(|n| n > 0))
    }

    fn upload(&self, blob_id: &str, file: &File, size: u64, progress: &dyn Fn(u64)) -> Result<()> {
        let dest = self.dest(blob_id)?;
        if existing_size(&dest)? == Some(size) {
            progress(size);
            return Ok(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".nydus-upload-")
            .tempfile_in(&self.dir)
            .map_err(|e| StorageError::io("creating a temporary file in", &self.dir, e))?;
        let shown = dest.display().to_string();
        let mut buf = Vec::new();
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(COPY_STEP as u64) as usize;
            read_piece(file, &shown, done, n, &mut buf)?;
            io::Write::write_all(&mut tmp, &buf).map_err(|e| StorageError::io("writing", tmp.path(), e))?;
            done += n as u64;
            progress(done);
        }
        tmp.as_file().sync_all().map_err(|e| StorageError::io("syncing", tmp.path(), e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let perm = std::fs::Permissions::from_mode(0o644);
            tmp.as_file().set_permissions(perm).map_err(|e| StorageError::io("chmod", tmp.path(), e))?;
        }
        tmp.persist(&dest).map_err(|e| StorageError::io("renaming the upload into", &dest, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::Write;

    fn source(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = t.reopen().unwrap();
        (t, f)
    }

    #[test]
    fn localfs_copies_atomically_and_skips_existing() {
        let dir = tempfile::tempdir().unwrap();
        let up =
            new_uploader(&BackendConfig::LocalFs(LocalFsConfig { dir: Some(dir.path().into()), ..Default::default() }))
                .unwrap();
        let data: Vec<u8> = (0..(3 * COPY_STEP + 17)).map(|i| (i * 7) as u8).collect();
        let (_t, f) = source(&data);
        assert!(!up.blob_exists("b1").unwrap());
        let last = Cell::new(0);
        let calls = Cell::new(0);
        up.upload("b1", &f, data.len() as u64, &|n| {
            assert!(n >= last.get());
            last.set(n);
            calls.set(calls.get() + 1);
        })
        .unwrap();
        assert_eq!(last.get(), data.len() as u64);
        assert_eq!(calls.get(), 4);
        assert_eq!(std::fs::read(dir.path().join("b1")).unwrap(), data);
        assert!(up.blob_exists("b1").unwrap());
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b1")]);

        // A file of the wrong size is replaced; one of the right size is kept.
        std::fs::write(dir.path().join("b2"), b"short").unwrap();
        up.upload("b2", &f, data.len() as u64, &|_| {}).unwrap();
        assert_eq!(std::fs::read(dir.path().join("b2")).unwrap(), data);
        std::fs::write(dir.path().join("b3"), vec![9u8; 5]).unwrap();
        up.upload("b3", &f, 5, &|_| {}).unwrap();
        assert_eq!(std::fs::read(dir.path().join("b3")).unwrap(), vec![9u8; 5]);

        // A source shorter than announced is an error, and leaves nothing.
        let e = up.upload("b4", &f, data.len() as u64 + 1, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("ended before"), "{e}");
        assert!(!dir.path().join("b4").exists());
        assert!(matches!(up.upload("../x", &f, 1, &|_| {}), Err(StorageError::InvalidBlobId(_))));
    }

    #[test]
    fn localfs_needs_an_existing_dir() {
        let e = LocalFsUploader::new(&LocalFsConfig::default()).unwrap_err();
        assert!(e.to_string().contains("needs `dir`"), "{e}");
        let e = LocalFsUploader::new(&LocalFsConfig { dir: Some("/nonexistent/x".into()), ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
    }

    #[test]
    fn sha256_hex_ids() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
        let mut d = DigestCheck::default();
        d.update(b"a");
        d.update(b"bc");
        assert_eq!(d.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
