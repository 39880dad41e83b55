//! Convert arbitrary bytes as a RAFS v5 bootstrap with `v5::load` and, when
//! that succeeds, run the bootstrap target's full traversal over the
//! converted v6 image.
#![no_main]

#[path = "../../../format/tests/support/mod.rs"]
mod support;

use nydus_format::reader::detect_version;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let was_v5 = detect_version(data) == Some(5);
    if let Ok(boot) = nydus_format::v5::load(data.to_vec()) {
        // `load` also parses v6 images as they are; the traversal re-parses
        // the (converted) bytes.
        let o = support::traverse::traverse(boot.bytes());
        assert!(o.parsed, "a bootstrap `load` accepted does not parse again");
        // A v5 image the converter accepted was checked on the way: the v6
        // image it wrote must read back without errors.
        assert!(!was_v5 || o.errors == 0, "converted v5 image reads with {} errors", o.errors);
    }
});
