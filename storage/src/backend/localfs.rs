//! Blobs stored as files in local directories.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_blob_id, BlobBackend, BlobReader};
use crate::config::LocalFsConfig;
use crate::error::{Result, StorageError};

/// Serves `dir/<blob id>`, then `alt_dirs[i]/<blob id>`; or, when
/// `blob_file` is set, that one file whatever the id (single-blob images).
#[derive(Debug)]
pub struct LocalFsBackend {
    cfg: LocalFsConfig,
}

impl LocalFsBackend {
    /// Check that `cfg` names somewhere to look.
    pub fn new(cfg: LocalFsConfig) -> Result<Self> {
        if cfg.dir.is_none() && cfg.blob_file.is_none() && cfg.alt_dirs.is_empty() {
            return Err(StorageError::BackendConfig("localfs backend needs `dir`, `alt_dirs` or `blob_file`".into()));
        }
        Ok(Self { cfg })
    }

    fn candidates(&self, blob_id: &str) -> Vec<PathBuf> {
        if let Some(f) = &self.cfg.blob_file {
            return vec![f.clone()];
        }
        self.cfg.dir.iter().chain(&self.cfg.alt_dirs).map(|d| d.join(blob_id)).collect()
    }
}

impl BlobBackend for LocalFsBackend {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        check_blob_id(blob_id)?;
        let tried = self.candidates(blob_id);
        for path in &tried {
            match File::open(path) {
                Ok(file) => {
                    let meta = file.metadata().map_err(|e| StorageError::io("inspecting blob", path, e))?;
                    if !meta.is_file() {
                        return Err(StorageError::io("opening blob", path, io::Error::other("not a regular file")));
                    }
                    return Ok(Arc::new(LocalFsBlob { blob_id: blob_id.to_string(), path: path.clone(), file }));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("opening blob", path, e)),
            }
        }
        let tried = tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        Err(StorageError::BlobNotFound { blob_id: blob_id.to_string(), tried })
    }
}

/// One open blob file.
#[derive(Debug)]
struct LocalFsBlob {
    blob_id: String,
    path: PathBuf,
    file: File,
}

impl LocalFsBlob {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl BlobReader for LocalFsBlob {
    fn blob_size(&self) -> Result<u64> {
        let meta = self.file.metadata().map_err(|e| StorageError::io("inspecting blob", self.path(), e))?;
        Ok(meta.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StorageError::BackendRead {
                        blob_id: self.blob_id.clone(),
                        offset,
                        len: buf.len() as u64,
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::read_full;

    #[test]
    fn searches_dir_then_alt_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("blob1"), b"hello world").unwrap();
        let be =
            LocalFsBackend::new(LocalFsConfig { dir: Some(a.clone()), blob_file: None, alt_dirs: vec![b] }).unwrap();
        let r = be.open_blob("blob1").unwrap();
        assert_eq!(r.blob_size().unwrap(), 11);
        let mut buf = [0u8; 5];
        read_full(&*r, "blob1", &mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        // Past the end: a short read, then an error from read_full.
        assert_eq!(r.read_at(&mut buf, 9).unwrap(), 2);
        let e = read_full(&*r, "blob1", &mut buf, 9).unwrap_err();
        assert!(matches!(e, StorageError::ShortRead { got: 2, .. }), "{e}");

        let e = be.open_blob("nope").err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains("blob nope not found") && msg.contains(&a.join("nope").display().to_string()), "{msg}");
        assert!(matches!(be.open_blob("../b/blob1"), Err(StorageError::InvalidBlobId(_))));
    }

    #[test]
    fn blob_file_serves_any_id() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("single");
        std::fs::write(&f, b"xyz").unwrap();
        let be = LocalFsBackend::new(LocalFsConfig { blob_file: Some(f), ..Default::default() }).unwrap();
        assert_eq!(be.open_blob("whatever").unwrap().blob_size().unwrap(), 3);
        assert!(matches!(LocalFsBackend::new(LocalFsConfig::default()), Err(StorageError::BackendConfig(_))));
    }
}
