//! Inline extended attributes (EROFS ibody xattrs with name-index prefixes).

use crate::error::{FormatError, Result};
use crate::ondisk::{XattrEntry, XattrIbodyHeader};
use zerocopy::little_endian::U16;
use zerocopy::IntoBytes;

/// Name-index prefixes, in the order they are matched.
const PREFIXES: [(u8, &[u8]); 5] = [
    (1, b"user."),
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (4, b"trusted."),
    (6, b"security."),
];

/// A list of xattrs as (full name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether RAFS can store an xattr of this name.
pub fn is_supported_name(name: &[u8]) -> bool {
    split_name(name).is_some()
}

fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    PREFIXES.iter().find_map(|(idx, prefix)| {
        let suffix = name.strip_prefix(*prefix)?;
        // The two ACL names are whole names, not prefixes.
        if (*idx == 2 || *idx == 3) && !suffix.is_empty() {
            return None;
        }
        Some((*idx, suffix))
    })
}

fn entry_size(suffix_len: usize, value_len: usize) -> usize {
    (4 + suffix_len + value_len).div_ceil(4) * 4
}

/// Size in bytes of the encoded inline xattr area (0 when empty).
pub fn encoded_size(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<usize> {
    if xattrs.is_empty() {
        return Ok(0);
    }
    let mut size = 12;
    for (name, value) in xattrs {
        let (_, suffix) = split_name(name).ok_or_else(|| {
            FormatError::Xattr(format!(
                "name {:?} has no prefix RAFS can store (user., trusted., security., system.posix_acl_*)",
                String::from_utf8_lossy(name)
            ))
        })?;
        if suffix.len() > 255 || value.len() > 65535 {
            return Err(FormatError::Xattr(format!(
                "{:?}: name suffix ({} bytes) or value ({} bytes) too long",
                String::from_utf8_lossy(name),
                suffix.len(),
                value.len()
            )));
        }
        size += entry_size(suffix.len(), value.len());
    }
    if (size - 12) / 4 + 1 > u16::MAX as usize {
        return Err(FormatError::Xattr(format!("xattr area of {size} bytes is too large")));
    }
    Ok(size)
}

/// `i_xattr_icount` for an area of `size` bytes.
pub fn icount_for_size(size: usize) -> u16 {
    if size == 0 {
        0
    } else {
        ((size - 12) / 4 + 1) as u16
    }
}

/// Area size for a stored `i_xattr_icount`.
pub fn size_for_icount(icount: u16) -> usize {
    if icount == 0 {
        0
    } else {
        12 + 4 * (icount as usize - 1)
    }
}

/// Encode the xattr area; `xattrs` should be sorted for reproducible output.
pub fn encode(xattrs: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    encoded_size(xattrs)?;
    out.extend_from_slice(XattrIbodyHeader::default().as_bytes());
    for (name, value) in xattrs {
        let (index, suffix) = split_name(name).expect("checked by encoded_size");
        let entry = XattrEntry {
            e_name_len: suffix.len() as u8,
            e_name_index: index,
            e_value_size: U16::new(value.len() as u16),
        };
        let start = out.len();
        out.extend_from_slice(entry.as_bytes());
        out.extend_from_slice(suffix);
        out.extend_from_slice(value);
        out.resize(start + entry_size(suffix.len(), value.len()), 0);
    }
    Ok(())
}

/// Decode an inline xattr area.
pub fn decode(area: &[u8]) -> Result<Xattrs> {
    let mut out = Vec::new();
    if area.is_empty() {
        return Ok(out);
    }
    if area.len() < 12 {
        return Err(FormatError::Xattr("xattr area shorter than its header".into()));
    }
    if area[4] != 0 {
        return Err(FormatError::Xattr("shared xattrs are not used by RAFS".into()));
    }
    let mut pos = 12;
    while pos + 4 <= area.len() {
        let name_len = area[pos] as usize;
        let index = area[pos + 1];
        let value_len = u16::from_le_bytes([area[pos + 2], area[pos + 3]]) as usize;
        let end = pos + 4 + name_len + value_len;
        if end > area.len() {
            return Err(FormatError::Xattr(format!(
                "entry at +{pos} ({name_len}+{value_len} bytes) overruns the {}-byte area",
                area.len()
            )));
        }
        let prefix = PREFIXES
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, p)| *p)
            .ok_or_else(|| FormatError::Xattr(format!("unknown name index {index}")))?;
        let mut name = prefix.to_vec();
        name.extend_from_slice(&area[pos + 4..pos + 4 + name_len]);
        out.push((name, area[pos + 4 + name_len..end].to_vec()));
        pos += entry_size(name_len, value_len);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let x: Xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0, 0, 0]),
            (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
            (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
            (b"user.a".to_vec(), vec![]),
        ];
        let mut buf = Vec::new();
        encode(&x, &mut buf).unwrap();
        assert_eq!(buf.len(), encoded_size(&x).unwrap());
        assert_eq!(size_for_icount(icount_for_size(buf.len())), buf.len());
        assert_eq!(decode(&buf).unwrap(), x);
    }

    #[test]
    fn rejects_unknown_namespace() {
        let x: Xattrs = vec![(b"system.nfs4_acl".to_vec(), vec![1])];
        assert!(encoded_size(&x).is_err());
        assert!(!is_supported_name(b"system.posix_acl_accessX"));
    }

    #[test]
    fn rejects_overrun() {
        let mut buf = vec![0u8; 16];
        buf[12] = 10; // name length past the end
        buf[13] = 1;
        assert!(decode(&buf).is_err());
    }
}
