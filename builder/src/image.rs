//! Loading a bootstrap file from disk.

use std::path::Path;

use nydus_format::Bootstrap;

use crate::error::{BuildError, Result};

/// Largest bootstrap we load into memory (RAFS v5's limit; v6 images of
/// millions of files stay far below it).
const MAX_BOOTSTRAP: u64 = 1 << 31;

/// Read and parse the bootstrap at `path`.
pub fn load(path: &Path) -> Result<Bootstrap<Vec<u8>>> {
    let md = std::fs::metadata(path).map_err(|e| BuildError::io(path, e))?;
    if !md.is_file() {
        return Err(BuildError::Invalid(format!("{}: not a regular file", path.display())));
    }
    if md.len() > MAX_BOOTSTRAP {
        return Err(BuildError::Invalid(format!(
            "{}: {} bytes is too large for a bootstrap",
            path.display(),
            md.len()
        )));
    }
    let data = std::fs::read(path).map_err(|e| BuildError::io(path, e))?;
    nydus_format::v5::load(data).map_err(|e| BuildError::format(path, e))
}

/// Path bytes for display.
pub fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}
