//! Decode a blob trailer against an arbitrary descriptor (see
//! `support::inputs` for the input layout).
#![no_main]

#[path = "../../../format/tests/support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((d, trailer)) = support::inputs::split_blob_meta_input(data) {
        if let Ok(chunks) = nydus_format::blob_meta::decode_trailer(&d, trailer) {
            assert_eq!(chunks.len(), d.chunk_count as usize);
        }
    }
});
