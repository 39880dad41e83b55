//! EROFS directory blocks: encoding and validated decoding.

use crate::error::{FormatError, Result};
use crate::ondisk::{Dirent, BLOCK_SIZE};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Entry name (may be `.` or `..`).
    pub name: Vec<u8>,
    /// nid of the target inode.
    pub nid: u64,
    /// EROFS file type (see [`crate::ondisk::file_type`]).
    pub file_type: u8,
}

/// Size of the directory data for these names (all entries incl. `.`/`..`).
pub fn dir_size<'a>(names: impl Iterator<Item = &'a [u8]>) -> u64 {
    let bs = BLOCK_SIZE as usize;
    let (mut full_blocks, mut used) = (0usize, 0usize);
    for n in names {
        let need = 12 + n.len();
        if used + need > bs {
            full_blocks += 1;
            used = 0;
        }
        used += need;
    }
    (full_blocks * bs + used) as u64
}

/// Encode sorted entries into directory data (`dir_size` bytes).
pub fn encode(entries: &[DirEntry]) -> Result<Vec<u8>> {
    let bs = BLOCK_SIZE as usize;
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut used = 0;
        let mut end = start;
        while end < entries.len() && used + 12 + entries[end].name.len() <= bs {
            used += 12 + entries[end].name.len();
            end += 1;
        }
        if end == start {
            return Err(FormatError::Encode("directory entry name too long".into()));
        }
        let block_base = out.len();
        let mut nameoff = 12 * (end - start);
        for e in &entries[start..end] {
            let d =
                Dirent { nid: U64::new(e.nid), nameoff: U16::new(nameoff as u16), file_type: e.file_type, reserved: 0 };
            out.extend_from_slice(d.as_bytes());
            nameoff += e.name.len();
        }
        for e in &entries[start..end] {
            out.extend_from_slice(&e.name);
        }
        start = end;
        if start < entries.len() {
            out.resize(block_base + bs, 0);
        }
    }
    Ok(out)
}

/// Decode and validate directory data of directory `nid`.
pub fn decode(nid: u64, data: &[u8]) -> Result<Vec<DirEntry>> {
    let mut out: Vec<DirEntry> = Vec::new();
    for (bi, block) in data.chunks(BLOCK_SIZE as usize).enumerate() {
        let entries = decode_block(nid, bi, block)?;
        if let (Some(last), Some(first)) = (out.last(), entries.first()) {
            if last.name >= first.name {
                return Err(unsorted(nid, &first.name, &last.name));
            }
        }
        out.extend(entries);
    }
    Ok(out)
}

/// Find `name` among directory blocks (each a whole block, the last one
/// possibly partial) without decoding the whole directory: a binary search
/// over the blocks' first names, then over the one block that can hold it.
pub fn lookup(nid: u64, blocks: &[&[u8]], name: &[u8]) -> Result<Option<DirEntry>> {
    let (mut lo, mut hi) = (0usize, blocks.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if first_name(nid, mid, blocks[mid])? <= name {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return Ok(None);
    }
    let entries = decode_block(nid, lo - 1, blocks[lo - 1])?;
    Ok(entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| entries[i].clone()))
}

fn unsorted(nid: u64, name: &[u8], prev: &[u8]) -> FormatError {
    FormatError::Directory {
        nid,
        reason: format!(
            "entries not sorted: {:?} after {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(prev)
        ),
    }
}

/// Entry count of a block, from its first dirent's name offset.
pub(crate) fn block_count(nid: u64, bi: usize, block: &[u8]) -> Result<usize> {
    let err = |reason: String| FormatError::Directory { nid, reason };
    if block.len() < 12 {
        return Err(err(format!("block {bi} holds only {} bytes", block.len())));
    }
    let first = Dirent::read_from_bytes(&block[..12]).expect("12 bytes");
    let n0 = first.nameoff.get() as usize;
    if n0 < 12 || !n0.is_multiple_of(12) || n0 >= block.len() {
        return Err(err(format!("block {bi}: first nameoff {n0} is invalid")));
    }
    Ok(n0 / 12)
}

/// Name bytes of entry `i` of a block holding `count` entries.
fn entry_name(nid: u64, bi: usize, block: &[u8], count: usize, i: usize) -> Result<(&[u8], Dirent)> {
    let err = |reason: String| FormatError::Directory { nid, reason };
    let d = Dirent::read_from_bytes(&block[i * 12..i * 12 + 12]).expect("12 bytes");
    let off = d.nameoff.get() as usize;
    if off < count * 12 || off >= block.len() {
        return Err(err(format!("block {bi} entry {i}: nameoff {off} out of range")));
    }
    let end = if i + 1 < count {
        Dirent::read_from_bytes(&block[(i + 1) * 12..(i + 2) * 12]).expect("12 bytes").nameoff.get() as usize
    } else {
        block[off..].iter().position(|&b| b == 0).map_or(block.len(), |p| off + p)
    };
    if end <= off || end > block.len() || end - off > 255 {
        return Err(err(format!("block {bi} entry {i}: bad name length")));
    }
    let name = &block[off..end];
    if name.contains(&b'/') || name.contains(&0) {
        return Err(err(format!("entry name {:?} contains '/' or NUL", String::from_utf8_lossy(name))));
    }
    Ok((name, d))
}

fn first_name(nid: u64, bi: usize, block: &[u8]) -> Result<&[u8]> {
    let count = block_count(nid, bi, block)?;
    Ok(entry_name(nid, bi, block, count, 0)?.0)
}

/// Decode and validate one directory block.
pub(crate) fn decode_block(nid: u64, bi: usize, block: &[u8]) -> Result<Vec<DirEntry>> {
    let count = block_count(nid, bi, block)?;
    let mut out: Vec<DirEntry> = Vec::with_capacity(count);
    for i in 0..count {
        let (name, d) = entry_name(nid, bi, block, count, i)?;
        if let Some(last) = out.last() {
            if last.name.as_slice() >= name {
                return Err(unsorted(nid, name, &last.name));
            }
        }
        out.push(DirEntry { name: name.to_vec(), nid: d.nid.get(), file_type: d.file_type });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize, len: usize) -> Vec<DirEntry> {
        let mut v: Vec<DirEntry> = (0..n)
            .map(|i| DirEntry { name: format!("{i:0len$}").into_bytes(), nid: 200 + i as u64, file_type: 1 })
            .collect();
        v.push(DirEntry { name: b".".to_vec(), nid: 1, file_type: 2 });
        v.push(DirEntry { name: b"..".to_vec(), nid: 1, file_type: 2 });
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[test]
    fn roundtrip_multi_block() {
        for (n, len) in [(0, 1), (3, 5), (600, 20), (40, 255)] {
            let e = entries(n, len);
            let data = encode(&e).unwrap();
            assert_eq!(data.len() as u64, dir_size(e.iter().map(|x| x.name.as_slice())), "n={n}");
            assert_eq!(decode(1, &data).unwrap(), e);
        }
    }

    #[test]
    fn lookup_searches_blocks() {
        for (n, len) in [(0, 1), (3, 5), (600, 20), (40, 255)] {
            let e = entries(n, len);
            let data = encode(&e).unwrap();
            let blocks: Vec<&[u8]> = data.chunks(BLOCK_SIZE as usize).collect();
            for want in &e {
                assert_eq!(lookup(1, &blocks, &want.name).unwrap().as_ref(), Some(want), "n={n}");
            }
            for absent in [&b"!"[..], b"zzzz", b"0000x", b"..."] {
                assert_eq!(lookup(1, &blocks, absent).unwrap(), None);
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(1, &[0u8; 12]).is_err());
        let mut data = encode(&entries(3, 4)).unwrap();
        data[8] = 7; // nameoff not a multiple of 12
        assert!(decode(1, &data).is_err());
    }
}
