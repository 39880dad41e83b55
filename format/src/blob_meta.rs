//! The blob trailer: the chunk-information (ci) array and its 4 KiB
//! compression-context header, which let a reader locate every stored chunk.

use crate::codec::Compressor;
use crate::error::{FormatError, Result};
use crate::ondisk::{BlobMetaHeaderOnDisk, BLOB_META_MAGIC, MAX_CHUNKS_PER_BLOB};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// Where one chunk lives in a blob (decoded v1 ci entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkLocation {
    /// Offset of the stored bytes in the blob file.
    pub compressed_offset: u64,
    /// Stored size.
    pub compressed_size: u32,
    /// Offset in the blob's uncompressed space (4 KiB aligned).
    pub uncompressed_offset: u64,
    /// Plain size.
    pub uncompressed_size: u32,
}

impl ChunkLocation {
    /// Stored bytes are compressed (v1 entries encode this as size inequality).
    pub fn is_compressed(&self) -> bool {
        self.compressed_size != self.uncompressed_size
    }
}

/// Size of one v1 ci entry.
pub const CI_V1_SIZE: usize = 16;
const MAX_CHUNK: u64 = 1 << 24;

/// Encode one v1 ci entry.
pub fn encode_ci_v1(c: &ChunkLocation) -> Result<[u8; 16]> {
    let (u, cs) = (c.uncompressed_size as u64, c.compressed_size as u64);
    if u == 0 || u > MAX_CHUNK || cs == 0 || cs > MAX_CHUNK {
        return Err(FormatError::Chunk(format!("chunk sizes {cs}/{u} out of range")));
    }
    if c.uncompressed_offset & 0xfff != 0 || c.uncompressed_offset >= 1 << 44 || c.compressed_offset >= 1 << 40 {
        return Err(FormatError::Chunk("chunk offset out of range or unaligned".into()));
    }
    let (u1, c1) = (u - 1, cs - 1);
    let uncomp = ((u1 & 0xf_ffff) << 44) | c.uncompressed_offset | (((u1 >> 20) & 0xf) << 8);
    let comp = ((c1 & 0xf_ffff) << 44) | (((c1 >> 20) & 0xf) << 40) | c.compressed_offset;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&uncomp.to_le_bytes());
    out[8..].copy_from_slice(&comp.to_le_bytes());
    Ok(out)
}

/// Decode one v1 ci entry.
pub fn decode_ci_v1(b: &[u8; 16]) -> ChunkLocation {
    let uncomp = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let comp = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    let usize_ = ((uncomp >> 44) | (((uncomp >> 8) & 0xf) << 20)) + 1;
    let csize = ((comp >> 44) | (((comp >> 40) & 0xf) << 20)) + 1;
    ChunkLocation {
        compressed_offset: comp & 0xff_ffff_ffff,
        compressed_size: csize as u32,
        uncompressed_offset: uncomp & 0xfff_ffff_f000,
        uncompressed_size: usize_ as u32,
    }
}

/// The encoded trailer of a blob: stored ci bytes followed by the header.
#[derive(Debug, Clone)]
pub struct BlobTrailer {
    /// Compressor actually used for the ci array.
    pub ci_compressor: Compressor,
    /// Size of the plain ci array.
    pub ci_uncompressed_size: u64,
    /// Size of the stored ci array.
    pub ci_compressed_size: u64,
    /// Stored ci array followed by the 4096-byte header.
    pub bytes: Vec<u8>,
}

/// Build the trailer for `chunks` (in ci order) of a blob whose chunk data
/// ends at `ci_offset`.
pub fn encode_trailer(
    chunks: &[ChunkLocation],
    compressor: Compressor,
    features: u32,
    ci_offset: u64,
) -> Result<BlobTrailer> {
    let mut plain = Vec::with_capacity(chunks.len() * CI_V1_SIZE);
    for c in chunks {
        plain.extend_from_slice(&encode_ci_v1(c)?);
    }
    let (ci_compressor, stored) = match compressor.compress(&plain)? {
        Some(z) => (compressor, z),
        None => (Compressor::None, plain.clone()),
    };
    let header = BlobMetaHeaderOnDisk {
        s_magic: U32::new(BLOB_META_MAGIC),
        s_features: U32::new(features),
        s_ci_compressor: U32::new(ci_compressor.id()),
        s_ci_entries: U32::new(chunks.len() as u32),
        s_ci_offset: U64::new(ci_offset),
        s_ci_compressed_size: U64::new(stored.len() as u64),
        s_ci_uncompressed_size: U64::new(plain.len() as u64),
        s_ci_zran_offset: U64::new(0),
        s_ci_zran_size: U64::new(0),
        s_ci_zran_count: U32::new(0),
        reserved: [0; 4032],
        s_magic2: U32::new(BLOB_META_MAGIC),
    };
    let ci_compressed_size = stored.len() as u64;
    let mut bytes = stored;
    bytes.extend_from_slice(header.as_bytes());
    Ok(BlobTrailer { ci_compressor, ci_uncompressed_size: plain.len() as u64, ci_compressed_size, bytes })
}

/// What the bootstrap says about a blob's ci array (from its blob entry).
#[derive(Debug, Clone, Copy)]
pub struct CiDescriptor {
    /// Offset of the stored ci array.
    pub ci_offset: u64,
    /// Stored size.
    pub ci_compressed_size: u64,
    /// Plain size.
    pub ci_uncompressed_size: u64,
    /// Compressor of the ci array.
    pub ci_compressor: u32,
    /// Number of chunks.
    pub chunk_count: u32,
    /// Blob features.
    pub features: u32,
    /// Size of the blob's uncompressed space.
    pub uncompressed_size: u64,
}

/// Parse and validate the trailer bytes read at `ci_offset`
/// (`ci_compressed_size + 4096` bytes) against the bootstrap's description;
/// returns the chunk locations in ci order.
pub fn decode_trailer(d: &CiDescriptor, bytes: &[u8]) -> Result<Vec<ChunkLocation>> {
    let err = |m: String| FormatError::BlobMeta(m);
    let want = d.ci_compressed_size.checked_add(4096);
    if want != Some(bytes.len() as u64) {
        return Err(err(format!("expected {} + 4096 trailer bytes, got {}", d.ci_compressed_size, bytes.len())));
    }
    let (stored, header) = bytes.split_at(bytes.len() - 4096);
    let h = BlobMetaHeaderOnDisk::read_from_bytes(header).expect("4096 bytes");
    if h.s_magic.get() != BLOB_META_MAGIC || h.s_magic2.get() != BLOB_META_MAGIC {
        return Err(err("bad blob meta header magic (blob truncated, corrupt or not this image's blob)".into()));
    }
    if h.s_ci_entries.get() != d.chunk_count
        || h.s_ci_compressor.get() != d.ci_compressor
        || h.s_ci_offset.get() != d.ci_offset
        || h.s_ci_compressed_size.get() != d.ci_compressed_size
        || h.s_ci_uncompressed_size.get() != d.ci_uncompressed_size
        || h.s_features.get() != d.features
    {
        return Err(err("blob meta header does not match the bootstrap's blob entry".into()));
    }
    if d.chunk_count > MAX_CHUNKS_PER_BLOB + 1 {
        return Err(err(format!("{} chunks exceed 2^24", d.chunk_count)));
    }
    if d.ci_uncompressed_size != d.chunk_count as u64 * CI_V1_SIZE as u64 {
        return Err(err("ci size does not match chunk count (only v1 ci arrays are supported)".into()));
    }
    let comp = Compressor::from_id(d.ci_compressor)
        .ok_or_else(|| err(format!("unknown ci compressor {}", d.ci_compressor)))?;
    // At most 2^24 * 16 bytes (256 MiB), checked above.
    let plain = comp.decompress(stored, d.ci_uncompressed_size as usize)?;
    let mut out = Vec::with_capacity(d.chunk_count as usize);
    let mut next_u = 0u64;
    for (i, e) in plain.chunks_exact(CI_V1_SIZE).enumerate() {
        let c = decode_ci_v1(e.try_into().expect("16 bytes"));
        if c.uncompressed_offset != next_u {
            return Err(err(format!("chunk {i}: uncompressed offsets are not contiguous")));
        }
        next_u = c.uncompressed_offset + (c.uncompressed_size as u64).div_ceil(4096) * 4096;
        if next_u / 4096 > d.uncompressed_size.div_ceil(4096)
            || c.compressed_offset + c.compressed_size as u64 > d.ci_offset
        {
            return Err(err(format!("chunk {i}: range lies outside the blob")));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_v1_roundtrip() {
        for (co, cs, uo, us) in
            [(0, 1, 0, 1), (12345, 0x100000, 0x1000, 0x100000), (1 << 39, 0xffffff, 0xfff_0000_0000, 0x1000000)]
        {
            let c = ChunkLocation {
                compressed_offset: co,
                compressed_size: cs,
                uncompressed_offset: uo,
                uncompressed_size: us,
            };
            assert_eq!(decode_ci_v1(&encode_ci_v1(&c).unwrap()), c);
        }
        let bad =
            ChunkLocation { uncompressed_offset: 1, uncompressed_size: 1, compressed_size: 1, ..Default::default() };
        assert!(encode_ci_v1(&bad).is_err());
    }

    #[test]
    fn trailer_roundtrip_and_checks() {
        let chunks: Vec<_> = (0..100u64)
            .map(|i| ChunkLocation {
                compressed_offset: i * 100,
                compressed_size: 100,
                uncompressed_offset: i * 4096,
                uncompressed_size: 4000,
            })
            .collect();
        let t = encode_trailer(&chunks, Compressor::Zstd, 0x4000_0001, 10_000).unwrap();
        let d = CiDescriptor {
            ci_offset: 10_000,
            ci_compressed_size: t.ci_compressed_size,
            ci_uncompressed_size: t.ci_uncompressed_size,
            ci_compressor: t.ci_compressor.id(),
            chunk_count: 100,
            features: 0x4000_0001,
            uncompressed_size: 100 * 4096,
        };
        assert_eq!(decode_trailer(&d, &t.bytes).unwrap(), chunks);
        let mut bad = t.bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decode_trailer(&d, &bad).is_err());
        assert!(decode_trailer(&CiDescriptor { chunk_count: 99, ..d }, &t.bytes).is_err());
    }
}
