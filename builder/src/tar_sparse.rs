//! GNU sparse tar entries (type `S`, as `tar --sparse` writes them).
//!
//! The header holds up to 4 `(offset, length)` data segments and the file's
//! real size; when its "extended" flag is set, 512-byte blocks of 21 more
//! segments follow the header, each with its own flag. The archive then
//! stores only the segments' bytes, back to back. [`SparseReader`] turns
//! them back into the whole file, with zeros in the holes, so the chunker
//! sees the same bytes as for the unpacked file (zero chunks deduplicate to
//! one). PAX sparse formats (`GNU.sparse.*` keys) are still refused.

use std::io::Read;

/// At most this many segments per entry (bounds memory on hostile input).
const MAX_SEGMENTS: usize = 1 << 20;

/// Offsets of the GNU header fields.
const SPARSE_AT: usize = 386;
const IS_EXTENDED_AT: usize = 482;
const REAL_SIZE_AT: usize = 483;

/// A tar number field: octal text, or base-256 when the high bit is set.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field.iter().copied().filter(|&b| b != 0 && b != b' ').collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// Segments `(offset, length)` of `raw` (24-byte entries); stops at the
/// first empty entry.
fn segments(raw: &[u8], out: &mut Vec<(u64, u64)>) -> Result<(), String> {
    for e in raw.chunks_exact(24) {
        if e.iter().all(|&b| b == 0) {
            break;
        }
        let off = number(&e[..12]).ok_or("bad sparse offset")?;
        let len = number(&e[12..]).ok_or("bad sparse length")?;
        out.push((off, len));
        if out.len() > MAX_SEGMENTS {
            return Err(format!("more than {MAX_SEGMENTS} sparse segments"));
        }
    }
    Ok(())
}

/// The sparse map and real size of the GNU sparse entry whose header is
/// `header`; `next_block` reads the extension blocks that follow it.
/// `stored` is the entry's size field: the bytes of all segments.
pub(crate) fn read_map(
    header: &[u8; 512],
    stored: u64,
    mut next_block: impl FnMut(&mut [u8; 512]) -> std::io::Result<()>,
) -> Result<(Vec<(u64, u64)>, u64), String> {
    let mut map = Vec::new();
    segments(&header[SPARSE_AT..SPARSE_AT + 4 * 24], &mut map)?;
    let real = number(&header[REAL_SIZE_AT..REAL_SIZE_AT + 12]).ok_or("bad real size")?;
    let mut extended = header[IS_EXTENDED_AT] != 0;
    let mut block = [0u8; 512];
    while extended {
        next_block(&mut block).map_err(|e| format!("sparse extension block: {e}"))?;
        segments(&block[..21 * 24], &mut map)?;
        extended = block[504] != 0;
    }
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in &map {
        let seg_end = off.checked_add(len).ok_or("sparse segment overflows")?;
        if off < end || seg_end > real {
            return Err(format!("sparse segment {off}+{len} overlaps another or passes the real size {real}"));
        }
        end = seg_end;
        total = total.checked_add(len).ok_or("sparse segments overflow")?;
    }
    if total != stored {
        return Err(format!("sparse segments hold {total} bytes but the entry stores {stored}"));
    }
    Ok((map, real))
}

/// The whole file of a sparse entry: segment bytes from `inner` (the
/// entry's stored data), zeros in between and after.
pub(crate) struct SparseReader<R> {
    inner: R,
    map: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    real: u64,
}

impl<R: Read> SparseReader<R> {
    pub(crate) fn new(inner: R, map: Vec<(u64, u64)>, real: u64) -> Self {
        Self { inner, map, next: 0, pos: 0, real }
    }
}

impl<R: Read> Read for SparseReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(&(off, len)) = self.map.get(self.next) {
            if self.pos >= off + len {
                self.next += 1;
                continue;
            }
            if self.pos < off {
                // A hole before the next segment.
                let n = buf.len().min((off - self.pos) as usize);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            let n = buf.len().min((off + len - self.pos) as usize);
            let got = self.inner.read(&mut buf[..n])?;
            if got == 0 && n > 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "sparse data truncated"));
            }
            self.pos += got as u64;
            return Ok(got);
        }
        // The hole after the last segment.
        let n = buf.len().min((self.real - self.pos) as usize);
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octal(v: u64, width: usize) -> Vec<u8> {
        let mut s = format!("{v:0w$o}", w = width - 1).into_bytes();
        s.push(0);
        s
    }

    fn header(segs: &[(u64, u64)], real: u64, extended: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        for (i, &(o, l)) in segs.iter().enumerate() {
            let at = SPARSE_AT + i * 24;
            h[at..at + 12].copy_from_slice(&octal(o, 12));
            h[at + 12..at + 24].copy_from_slice(&octal(l, 12));
        }
        h[IS_EXTENDED_AT] = extended as u8;
        h[REAL_SIZE_AT..REAL_SIZE_AT + 12].copy_from_slice(&octal(real, 12));
        h
    }

    #[test]
    fn holes_read_as_zeros() {
        let h = header(&[(2, 3), (10, 2)], 16, false);
        let (map, real) = read_map(&h, 5, |_| unreachable!()).unwrap();
        let mut out = Vec::new();
        SparseReader::new(&b"abcde"[..], map, real).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\0\0abc\0\0\0\0\0de\0\0\0\0");
    }

    #[test]
    fn extension_blocks_are_read() {
        let h = header(&[(0, 1), (2, 1), (4, 1), (6, 1)], 10, true);
        let mut ext = [0u8; 512];
        ext[..12].copy_from_slice(&octal(8, 12));
        ext[12..24].copy_from_slice(&octal(1, 12));
        let mut blocks = vec![ext];
        let (map, real) = read_map(&h, 5, |b| {
            *b = blocks.pop().unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(map.len(), 5);
        let mut out = Vec::new();
        SparseReader::new(&b"12345"[..], map, real).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"1\x002\x003\x004\x005\0");
    }

    #[test]
    fn bad_maps_are_refused() {
        // Overlap, past the real size, stored size mismatch.
        for (segs, real, stored) in [(vec![(0, 4), (2, 2)], 8, 6), (vec![(6, 4)], 8, 4), (vec![(0, 4)], 8, 3)] {
            assert!(read_map(&header(&segs, real, false), stored, |_| unreachable!()).is_err(), "{segs:?}");
        }
    }
}
