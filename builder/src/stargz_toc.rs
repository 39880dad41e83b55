//! The eStargz table of contents (`stargz.index.json`) and where to find it.
//!
//! An eStargz layer is a gzip-compressed tar made of many gzip members: each
//! regular file's data chunk starts a new member, so a reader can inflate a
//! chunk from the middle of the blob. The TOC lists every tar entry with
//! its attributes and, for data, the blob offset of the member holding it.
//! It sits in its own member near the end of the blob (a tar with the one
//! entry `stargz.index.json`), found through the footer: the last 51 bytes
//! are an empty gzip member whose extra field reads
//! `SG` 22 0 `<16 hex digits: TOC offset>` `STARGZ` (legacy stargz: 47
//! bytes, the extra field without the `SG` subfield header).
//!
//! Reference: stargz-snapshotter `estargz/types.go` (`TOCEntry`) and
//! `docs/estargz.md`. Parsing never panics: a malformed TOC or footer is a
//! [`StargzError`] naming what is wrong.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

/// Name of the TOC entry in the blob's last tar.
pub const TOC_NAME: &str = "stargz.index.json";
/// Root entries the eStargz converter adds to mark the end of the
/// prefetched files; they are not part of the image.
pub const LANDMARKS: [&str; 2] = [".no.prefetch.landmark", ".prefetch.landmark"];
/// Size of an eStargz footer.
pub const FOOTER_SIZE: u64 = 51;
/// Size of a legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: u64 = 47;
/// Largest TOC accepted (it is held in memory).
const MAX_TOC: u64 = 256 << 20;

/// What is wrong with an eStargz blob or its TOC.
#[derive(Debug, thiserror::Error)]
pub enum StargzError {
    /// The blob has no eStargz footer.
    #[error("no eStargz footer: {0} (is this an eStargz layer? plain tar.gz layers use --type targz-rafs)")]
    Footer(String),
    /// The TOC member or its tar cannot be read.
    #[error("cannot read the TOC at offset {offset:#x}: {reason}")]
    TocMember {
        /// TOC offset from the footer.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// The TOC is not valid JSON of the expected shape.
    #[error("{TOC_NAME} is not a valid TOC: {0}")]
    Json(String),
    /// A TOC version this builder does not know.
    #[error("{TOC_NAME} has version {0}; only version 1 is supported")]
    Version(u64),
    /// One entry is invalid.
    #[error("{TOC_NAME} entry {index} ({name:?}): {reason}")]
    Entry {
        /// Position in `entries`.
        index: usize,
        /// The entry's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error reading the source.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One TOC entry, with the field names of stargz-snapshotter's `TOCEntry`.
/// Fields the builder does not use (`userName`, `groupName`, `NumLink`,
/// `digest`) are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TocEntry {
    /// Path in the tar (`./a/b`, directories with a trailing `/`).
    pub name: String,
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size of a regular file.
    pub size: u64,
    /// Modification time, RFC 3339 in UTC (second precision as written by
    /// the converter); empty means 0.
    pub modtime: String,
    /// Symlink target, or the path a hard link names.
    #[serde(rename = "linkName")]
    pub link_name: String,
    /// Permission bits (tar mode; type bits, if any, are ignored).
    pub mode: u64,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Device major number.
    #[serde(rename = "devMajor")]
    pub dev_major: u64,
    /// Device minor number.
    #[serde(rename = "devMinor")]
    pub dev_minor: u64,
    /// Extended attributes, values base64-encoded.
    pub xattrs: BTreeMap<String, String>,
    /// Blob offset of the gzip member whose plain data starts with this
    /// chunk.
    pub offset: u64,
    /// Offset of this chunk in the file.
    #[serde(rename = "chunkOffset")]
    pub chunk_offset: u64,
    /// Size of this chunk; 0: up to the end of the file.
    #[serde(rename = "chunkSize")]
    pub chunk_size: u64,
    /// `sha256:<hex>` of the chunk's plain data.
    #[serde(rename = "chunkDigest")]
    pub chunk_digest: String,
    /// Offset of the chunk inside the member's plain data (several small
    /// files in one member); not supported when referencing the blob.
    #[serde(rename = "innerOffset")]
    pub inner_offset: u64,
}

/// A parsed TOC.
#[derive(Debug, Clone, Deserialize)]
pub struct Toc {
    /// Format version (1).
    pub version: u64,
    /// Entries in blob order.
    pub entries: Vec<TocEntry>,
}

impl Toc {
    /// Parse and check the version.
    pub fn parse(json: &[u8]) -> Result<Self, StargzError> {
        let toc: Toc = serde_json::from_slice(json).map_err(|e| StargzError::Json(e.to_string()))?;
        if toc.version != 1 {
            return Err(StargzError::Version(toc.version));
        }
        Ok(toc)
    }
}

/// An entry's error.
pub fn entry_err(index: usize, e: &TocEntry, reason: impl Into<String>) -> StargzError {
    StargzError::Entry { index, name: e.name.clone(), reason: reason.into() }
}

/// The TOC offset recorded in a blob's footer, given the blob's last
/// [`FOOTER_SIZE`] bytes (or fewer, for a tiny blob); also the footer size.
pub fn parse_footer(tail: &[u8]) -> Result<(u64, u64), StargzError> {
    let hex_at = |footer: &[u8], at: usize| -> Option<u64> {
        let digits = footer.get(at..at + 16)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) || footer.get(at + 16..at + 22)? != b"STARGZ" {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    // gzip header: magic, CM=8, FLG with FEXTRA, then XLEN at 10..12.
    let header_ok = |f: &[u8], xlen: u16| {
        f.len() >= 12 && f[..3] == [0x1f, 0x8b, 8] && f[3] & 4 != 0 && f[10..12] == xlen.to_le_bytes()
    };
    if tail.len() as u64 >= FOOTER_SIZE {
        let f = &tail[tail.len() - FOOTER_SIZE as usize..];
        if header_ok(f, 26) && &f[12..16] == b"SG\x16\x00" {
            if let Some(off) = hex_at(f, 16) {
                return Ok((off, FOOTER_SIZE));
            }
        }
    }
    if tail.len() as u64 >= LEGACY_FOOTER_SIZE {
        let f = &tail[tail.len() - LEGACY_FOOTER_SIZE as usize..];
        if header_ok(f, 22) {
            if let Some(off) = hex_at(f, 12) {
                return Ok((off, LEGACY_FOOTER_SIZE));
            }
        }
    }
    Err(StargzError::Footer("the last 51 bytes are not a gzip header with an SG/STARGZ extra field".into()))
}

/// An eStargz blob opened for its TOC.
#[derive(Debug, Clone)]
pub struct BlobToc {
    /// The TOC.
    pub toc: Toc,
    /// Offset of the TOC's gzip member (where the last data member ends).
    pub toc_offset: u64,
    /// Blob size.
    pub blob_size: u64,
}

/// Read the TOC of the eStargz blob `f` (footer → TOC member → tar entry).
pub fn read_blob_toc(f: &mut File) -> Result<BlobToc, StargzError> {
    let blob_size = f.metadata()?.len();
    let n = blob_size.min(FOOTER_SIZE);
    let mut tail = vec![0u8; n as usize];
    f.seek(SeekFrom::Start(blob_size - n))?;
    f.read_exact(&mut tail)?;
    let (toc_offset, footer) = parse_footer(&tail)?;
    if toc_offset >= blob_size - footer {
        return Err(StargzError::Footer(format!(
            "TOC offset {toc_offset:#x} lies beyond the data ({} bytes)",
            blob_size - footer
        )));
    }
    let member_err = |reason: String| StargzError::TocMember { offset: toc_offset, reason };
    f.seek(SeekFrom::Start(toc_offset))?;
    let member = std::io::BufReader::new(Read::take(&mut *f, blob_size - footer - toc_offset));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(member));
    let entries = archive.entries().map_err(|e| member_err(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| member_err(e.to_string()))?;
        let path = entry.path_bytes().into_owned();
        if normalized(&path) != TOC_NAME.as_bytes() {
            continue;
        }
        let size = entry.size();
        if size > MAX_TOC {
            return Err(member_err(format!("{TOC_NAME} of {size} bytes is too large")));
        }
        let mut json = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut json).map_err(|e| member_err(e.to_string()))?;
        return Ok(BlobToc { toc: Toc::parse(&json)?, toc_offset, blob_size });
    }
    Err(member_err(format!("the tar there has no {TOC_NAME} entry")))
}

/// Read a TOC file (`stargz.index.json` itself).
pub fn read_toc_file(path: &Path) -> Result<Toc, StargzError> {
    let f = File::open(path)?;
    let mut json = Vec::new();
    f.take(MAX_TOC + 1).read_to_end(&mut json)?;
    if json.len() as u64 > MAX_TOC {
        return Err(StargzError::Json(format!("larger than {MAX_TOC} bytes")));
    }
    Toc::parse(&json)
}

/// A tar or TOC entry name without leading `./` and `/` and trailing `/`.
pub fn normalized(mut name: &[u8]) -> &[u8] {
    loop {
        if let Some(r) = name.strip_prefix(b"./") {
            name = r;
        } else if let Some(r) = name.strip_prefix(b"/") {
            name = r;
        } else {
            break;
        }
    }
    while let Some(r) = name.strip_suffix(b"/") {
        name = r;
    }
    name
}

/// Whether a tar entry of an eStargz blob is eStargz metadata (the TOC, the
/// landmarks) rather than image content.
pub fn is_meta_entry(name: &[u8]) -> bool {
    let n = normalized(name);
    n == TOC_NAME.as_bytes() || LANDMARKS.iter().any(|l| n == l.as_bytes())
}

/// Parse an RFC 3339 time (`2006-01-02T15:04:05Z`, optional fraction and
/// numeric offset) into seconds since the epoch (two's complement when
/// negative) and nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<(u64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nsec = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 9)];
        nsec = format!("{digits:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = h * 3600 + m * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
    Some((secs as u64, nsec))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Decode a `sha256:<64 hex>` chunk digest.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A footer as stargz-snapshotter writes it: a gzip member with the
    /// extra field, one empty final stored block and a zero trailer.
    fn gz_footer(extra: &[u8]) -> Vec<u8> {
        let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff];
        f.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        f.extend_from_slice(extra);
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        f.extend_from_slice(&[0; 8]);
        f
    }

    fn footer(offset: u64) -> Vec<u8> {
        gz_footer(&[&b"SG\x16\x00"[..], format!("{offset:016x}STARGZ").as_bytes()].concat())
    }

    #[test]
    fn footer_is_found() {
        let f = footer(0x1234);
        assert_eq!(f.len() as u64, FOOTER_SIZE);
        let mut blob = vec![7u8; 100];
        blob.extend_from_slice(&f);
        assert_eq!(parse_footer(&blob[blob.len() - 51..]).unwrap(), (0x1234, 51));
        let legacy = gz_footer(format!("{:016x}STARGZ", 99).as_bytes());
        assert_eq!(legacy.len() as u64, LEGACY_FOOTER_SIZE);
        assert_eq!(parse_footer(&legacy).unwrap(), (99, 47));
        let mut bad = f.clone();
        bad[20] = b'x'; // not a hex digit
        assert!(parse_footer(&bad).unwrap_err().to_string().contains("no eStargz footer"));
        assert!(parse_footer(b"short").is_err());
        assert!(parse_footer(&[0u8; 51]).is_err());
    }

    #[test]
    fn toc_parses_every_field() {
        let json = br#"{"version":1,"entries":[
            {"name":"./","type":"dir","modtime":"2021-01-02T03:04:05Z","mode":493},
            {"name":"./f","type":"reg","size":5,"offset":85,"uid":7,"gid":8,"chunkSize":0,
             "xattrs":{"user.k":"dmFs"},"chunkDigest":"sha256:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4",
             "userName":"u","NumLink":1,"futureField":[1,2]},
            {"name":"./c","type":"char","devMajor":1,"devMinor":5}]}"#;
        let toc = Toc::parse(json).unwrap();
        assert_eq!(toc.entries.len(), 3);
        let f = &toc.entries[1];
        assert_eq!((f.kind.as_str(), f.size, f.offset, f.uid, f.gid), ("reg", 5, 85, 7, 8));
        assert_eq!(f.xattrs["user.k"], "dmFs");
        assert!(parse_sha256(&f.chunk_digest).is_some());
        assert_eq!((toc.entries[2].dev_major, toc.entries[2].dev_minor), (1, 5));
    }

    #[test]
    fn malformed_tocs_are_clear_errors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "not a valid TOC"),
            (b"{\"version\":1", "not a valid TOC"),
            (b"[]", "not a valid TOC"),
            (b"{\"version\":2,\"entries\":[]}", "version 2"),
            (b"{\"entries\":[]}", "missing field `version`"),
            (b"{\"version\":1,\"entries\":[{\"name\":\"a\",\"offset\":-1}]}", "invalid value"),
            (b"{\"version\":1,\"entries\":[{\"name\":7}]}", "invalid type"),
        ];
        for (json, want) in cases {
            let e = Toc::parse(json).unwrap_err().to_string();
            assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn toc_is_read_from_a_blob() {
        let json = br#"{"version":1,"entries":[{"name":"x","type":"dir"}]}"#;
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, TOC_NAME, &json[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let mut blob = b"leading data members".to_vec();
        let off = blob.len() as u64;
        blob.extend_from_slice(&gz.finish().unwrap());
        blob.extend_from_slice(&footer(off));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&blob).unwrap();
        let t = read_blob_toc(&mut f).unwrap();
        assert_eq!((t.toc_offset, t.blob_size, t.toc.entries.len()), (off, blob.len() as u64, 1));

        // A footer pointing at something that is not a TOC member.
        let mut bad = blob[..off as usize].to_vec();
        bad.extend_from_slice(&footer(0));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bad).unwrap();
        assert!(read_blob_toc(&mut f).unwrap_err().to_string().contains("cannot read the TOC at offset 0x0"));
        // A footer pointing past the data.
        let mut bad = blob[..off as usize].to_vec();
        bad.extend_from_slice(&footer(1 << 40));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bad).unwrap();
        assert!(read_blob_toc(&mut f).unwrap_err().to_string().contains("beyond the data"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2021-01-02T03:04:05Z"), Some((1_609_556_645, 0)));
        assert_eq!(parse_rfc3339("2021-01-02T04:04:05.5+01:00"), Some((1_609_556_645, 500_000_000)));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some((-1i64 as u64, 0)));
        assert_eq!(parse_rfc3339("2242-03-16T12:56:37.123456789Z").map(|t| t.1), Some(123_456_789));
        for bad in ["", "2021-01-02", "2021-13-02T03:04:05Z", "2021-01-02T03:04:05", "2021-01-02T03:04:05.Z", "x"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_meta_entries() {
        assert_eq!(normalized(b"./a/b/"), b"a/b");
        assert_eq!(normalized(b"./"), b"");
        assert!(is_meta_entry(b"./stargz.index.json"));
        assert!(is_meta_entry(b".no.prefetch.landmark"));
        assert!(!is_meta_entry(b"dir/.prefetch.landmark"));
        assert!(parse_sha256("sha256:00").is_none());
        assert!(parse_sha256("md5:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4").is_none());
    }
}
