//! Byte layouts of fuzzing inputs that carry more than one value.

use nydus_format::blob_meta::CiDescriptor;

/// Size of the descriptor prefix of a `blob_meta` input.
const DESC_LEN: usize = 45;

/// A `blob_meta` input: one mode byte, a 44-byte little-endian descriptor
/// (ci_offset, ci_compressed_size, ci_uncompressed_size, ci_compressor,
/// chunk_count, features, uncompressed_size), then the trailer bytes.
pub fn blob_meta_input(d: &CiDescriptor, trailer: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&d.ci_offset.to_le_bytes());
    out.extend_from_slice(&d.ci_compressed_size.to_le_bytes());
    out.extend_from_slice(&d.ci_uncompressed_size.to_le_bytes());
    out.extend_from_slice(&d.ci_compressor.to_le_bytes());
    out.extend_from_slice(&d.chunk_count.to_le_bytes());
    out.extend_from_slice(&d.features.to_le_bytes());
    out.extend_from_slice(&d.uncompressed_size.to_le_bytes());
    out.extend_from_slice(trailer);
    out
}

/// Inverse of [`blob_meta_input`]. With an odd mode byte the header fields
/// of the trailer (when it holds one) replace the descriptor's, so that the
/// fuzzer reaches the ci array decoding without matching them by chance.
pub fn split_blob_meta_input(data: &[u8]) -> Option<(CiDescriptor, &[u8])> {
    if data.len() < DESC_LEN {
        return None;
    }
    let (head, trailer) = data.split_at(DESC_LEN);
    let mut d = CiDescriptor {
        ci_offset: u64_at(head, 1),
        ci_compressed_size: u64_at(head, 9),
        ci_uncompressed_size: u64_at(head, 17),
        ci_compressor: u32_at(head, 25),
        chunk_count: u32_at(head, 29),
        features: u32_at(head, 33),
        uncompressed_size: u64_at(head, 37),
    };
    if head[0] & 1 == 1 && trailer.len() >= 4096 {
        // BlobMetaHeaderOnDisk: magic, features, ci_compressor, ci_entries,
        // ci_offset, ci_compressed_size, ci_uncompressed_size, ...
        let h = &trailer[trailer.len() - 4096..];
        d.features = u32_at(h, 4);
        d.ci_compressor = u32_at(h, 8);
        d.chunk_count = u32_at(h, 12);
        d.ci_offset = u64_at(h, 16);
        d.ci_compressed_size = u64_at(h, 24);
        d.ci_uncompressed_size = u64_at(h, 32);
    }
    Some((d, trailer))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
