//! Decode arbitrary bytes as directory data and as an inline xattr area;
//! whatever decodes must survive a re-encode unchanged.
#![no_main]

use nydus_format::{dir, xattr};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = dir::decode(1, data) {
        let again = dir::encode(&entries).expect("decoded entries re-encode");
        assert_eq!(dir::decode(1, &again).expect("re-encoded entries decode"), entries);
    }
    if let Ok(xattrs) = xattr::decode(data) {
        let mut again = Vec::new();
        if xattr::encode(&xattrs, &mut again).is_ok() {
            assert_eq!(xattr::decode(&again).expect("re-encoded xattrs decode"), xattrs);
        }
    }
});
