//! Chunk codecs (compression) and digests.
//!
//! The numeric ids are the ones stored in RAFS blob entries and blob meta
//! headers; the flag bits are the ones stored in the superblock.

use crate::error::{FormatError, Result};
use sha2::Digest as _;

/// A chunk compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compressor {
    /// Stored as is.
    None,
    /// Raw LZ4 block (no frame, no size prefix).
    Lz4Block,
    /// gzip member (eStargz blobs referenced in place: a chunk is the start
    /// of a member, whose plain data may continue past the chunk; only
    /// decoding is supported).
    Gzip,
    /// zstd frame.
    #[default]
    Zstd,
}

impl Compressor {
    /// Id stored in blob entries.
    pub fn id(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Lz4Block => 1,
            Self::Gzip => 2,
            Self::Zstd => 3,
        }
    }

    /// Decode a stored id.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::None,
            1 => Self::Lz4Block,
            2 => Self::Gzip,
            3 => Self::Zstd,
            _ => return None,
        })
    }

    /// The superblock flag bit of this algorithm.
    pub fn sb_flag(self) -> u64 {
        match self {
            Self::None => crate::flags::COMPRESSION_NONE,
            Self::Lz4Block => crate::flags::COMPRESSION_LZ4,
            Self::Gzip => crate::flags::COMPRESSION_GZIP,
            Self::Zstd => crate::flags::COMPRESSION_ZSTD,
        }
    }

    /// Upstream's name (as used on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4Block => "lz4_block",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// Parse upstream's name.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "lz4_block" => Self::Lz4Block,
            "gzip" => Self::Gzip,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    /// Compress `data`; `None` when the result would not be strictly smaller
    /// (the caller then stores the input verbatim, as upstream does).
    pub fn compress(self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let out = match self {
            Self::None => return Ok(None),
            Self::Lz4Block => lz4_flex::block::compress(data),
            Self::Zstd => zstd::bulk::compress(data, 3).map_err(|e| FormatError::Codec {
                algo: "zstd",
                op: "compression",
                reason: e.to_string(),
            })?,
            Self::Gzip => {
                return Err(FormatError::Codec {
                    algo: "gzip",
                    op: "compression",
                    reason: "gzip is only used for stargz-style images".into(),
                })
            }
        };
        Ok((out.len() < data.len()).then_some(out))
    }

    /// Decompress `data` into exactly `out_len` bytes.
    pub fn decompress(self, data: &[u8], out_len: usize) -> Result<Vec<u8>> {
        let err = |algo, reason: String| FormatError::Codec { algo, op: "decompression", reason };
        let out = match self {
            Self::None => data.to_vec(),
            Self::Lz4Block => {
                lz4_flex::block::decompress(data, out_len).map_err(|e| err("lz4_block", e.to_string()))?
            }
            Self::Zstd => {
                let mut out = Vec::with_capacity(out_len);
                let mut dec = zstd::bulk::Decompressor::new().map_err(|e| err("zstd", e.to_string()))?;
                dec.decompress_to_buffer(data, &mut out).map_err(|e| err("zstd", e.to_string()))?;
                out
            }
            Self::Gzip => gunzip_prefix(data, out_len).map_err(|e| err("gzip", e.to_string()))?,
        };
        if out.len() != out_len {
            return Err(err(self.name(), format!("produced {} bytes, expected {out_len}", out.len())));
        }
        Ok(out)
    }
}

/// The first `out_len` plain bytes of the gzip member at the start of
/// `data`. An eStargz chunk is the start of a member that goes on with tar
/// padding and the next entries' headers, and its stored range may run into
/// the next member: both are left undecoded (so the member's CRC, which
/// covers the whole member, is not checked; the chunk digest is).
fn gunzip_prefix(data: &[u8], out_len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = vec![0u8; out_len];
    let mut dec = flate2::read::GzDecoder::new(data);
    let mut got = 0;
    while got < out_len {
        match dec.read(&mut out[got..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("member ends after {got} of {out_len} bytes"),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A chunk digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Digester {
    /// BLAKE3-256 (default).
    #[default]
    Blake3,
    /// SHA-256.
    Sha256,
}

/// A 32-byte chunk digest.
pub type Digest = [u8; 32];

impl Digester {
    /// Id stored in blob entries.
    pub fn id(self) -> u32 {
        match self {
            Self::Blake3 => 0,
            Self::Sha256 => 1,
        }
    }

    /// Decode a stored id.
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::Blake3),
            1 => Some(Self::Sha256),
            _ => None,
        }
    }

    /// Superblock flag bit.
    pub fn sb_flag(self) -> u64 {
        match self {
            Self::Blake3 => crate::flags::HASH_BLAKE3,
            Self::Sha256 => crate::flags::HASH_SHA256,
        }
    }

    /// Upstream's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blake3 => "blake3",
            Self::Sha256 => "sha256",
        }
    }

    /// Parse upstream's name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "blake3" => Some(Self::Blake3),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// Digest of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            Self::Blake3 => *blake3::hash(data).as_bytes(),
            Self::Sha256 => sha2::Sha256::digest(data).into(),
        }
    }
}

/// CRC-32C (Castagnoli) of `data`, as stored in chunk records.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// A reusable chunk compressor: keeps codec state between calls, which
/// matters for zstd (context set-up costs more than a small chunk).
pub struct ChunkEncoder {
    algo: Compressor,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl ChunkEncoder {
    /// Create an encoder for `algo`.
    pub fn new(algo: Compressor) -> Result<Self> {
        let zstd = match algo {
            Compressor::Zstd => Some(zstd::bulk::Compressor::new(3).map_err(|e| FormatError::Codec {
                algo: "zstd",
                op: "compression",
                reason: e.to_string(),
            })?),
            _ => None,
        };
        Ok(Self { algo, zstd })
    }

    /// Compress `data`; `None` when the output would not be strictly smaller.
    pub fn compress(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        match (&mut self.zstd, self.algo) {
            (Some(z), _) => {
                let out = z.compress(data).map_err(|e| FormatError::Codec {
                    algo: "zstd",
                    op: "compression",
                    reason: e.to_string(),
                })?;
                Ok((out.len() < data.len()).then_some(out))
            }
            (None, algo) => algo.compress(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_codec() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compressor::Lz4Block, Compressor::Zstd] {
            let z = c.compress(&data).unwrap().expect("compressible");
            assert!(z.len() < data.len());
            assert_eq!(c.decompress(&z, data.len()).unwrap(), data);
            assert_eq!(Compressor::from_id(c.id()), Some(c));
            assert_eq!(Compressor::from_name(c.name()), Some(c));
        }
    }

    #[test]
    fn incompressible_is_stored() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(Compressor::Zstd.compress(&data[..16]).unwrap().is_none());
        assert!(Compressor::None.compress(&data).unwrap().is_none());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        assert!(Compressor::Zstd.decompress(b"garbage", 10).is_err());
        assert!(Compressor::Lz4Block.decompress(&[0xff; 8], 100).is_err());
        let z = Compressor::Zstd.compress(&[0u8; 1000]).unwrap().unwrap();
        assert!(Compressor::Zstd.decompress(&z, 999).is_err());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_decodes_only_the_chunk_prefix() {
        let chunk: Vec<u8> = (0..10_000u32).map(|i| (i % 97) as u8).collect();
        // The member goes on past the chunk (tar padding, next header), and
        // the stored range runs into the next member.
        let mut member = chunk.clone();
        member.extend_from_slice(&[0u8; 512]);
        member.extend_from_slice(b"next tar header");
        let mut stored = gzip(&member);
        stored.extend_from_slice(&gzip(b"the next member"));
        assert_eq!(Compressor::Gzip.decompress(&stored, chunk.len()).unwrap(), chunk);
        assert_eq!(Compressor::from_id(Compressor::Gzip.id()), Some(Compressor::Gzip));
        // Asking for more than the member holds, truncated input, garbage.
        let e = Compressor::Gzip.decompress(&gzip(&chunk), chunk.len() + 1).unwrap_err().to_string();
        assert!(e.contains("gzip") && e.contains("member ends"), "{e}");
        let z = gzip(&chunk);
        assert!(Compressor::Gzip.decompress(&z[..z.len() / 2], chunk.len()).is_err());
        assert!(Compressor::Gzip.decompress(b"not gzip at all", 4).is_err());
        assert!(Compressor::Gzip.compress(&chunk).is_err());
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            hex::encode(Digester::Sha256.digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(Digester::Blake3.digest(b"")),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
