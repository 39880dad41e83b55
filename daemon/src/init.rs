//! The `FUSE_INIT` fields nydusd sets itself. fuse-backend-rs 0.14 knows
//! neither FUSE passthrough nor FUSE over io_uring, so the worker that gets
//! `FUSE_INIT` lets the server write its reply into a pipe, patches the
//! reply with [`ask`] and sends it on (see `channel.rs`).

/// `FUSE_INIT`'s opcode.
pub const FUSE_INIT: u32 = 26;
/// `fuse_in_header` and `fuse_out_header` sizes.
pub const IN_HEADER: usize = 40;
pub const OUT_HEADER: usize = 16;
/// `FUSE_INIT_EXT` in `flags`: `flags2` is valid.
const INIT_EXT: u32 = 1 << 30;

/// The native-endian `u32` at `at` of `b`, if `b` is long enough.
pub fn word(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
}

/// Store `v` at `at` of `b` (which must be long enough).
pub fn set_word(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// The opcode of request `req`.
pub fn opcode(req: &[u8]) -> Option<u32> {
    word(req, 4)
}

/// Whether `FUSE_INIT` request `req` offers `flag2`, a `flags2` bit.
pub fn offers(req: &[u8], flag2: u32) -> bool {
    // fuse_init_in: major, minor, max_readahead, flags, flags2, ...
    let (flags, flags2) = (word(req, IN_HEADER + 12), word(req, IN_HEADER + 16));
    matches!((flags, flags2), (Some(f), Some(f2)) if f & INIT_EXT != 0 && f2 & flag2 != 0)
}

/// Set `flag2` (and `FUSE_INIT_EXT`) in `FUSE_INIT` reply `reply`, header
/// included. Returns false, leaving it alone, for an error reply or one too
/// short to carry `flags2` (an old protocol minor).
pub fn ask(reply: &mut [u8], flag2: u32) -> bool {
    // fuse_init_out: flags at 12, flags2 at 32.
    if word(reply, 4) != Some(0) || reply.len() < OUT_HEADER + 40 {
        return false;
    }
    let flags = word(reply, OUT_HEADER + 12).unwrap_or(0);
    set_word(reply, OUT_HEADER + 12, flags | INIT_EXT);
    let flags2 = word(reply, OUT_HEADER + 32).unwrap_or(0);
    set_word(reply, OUT_HEADER + 32, flags2 | flag2);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_asks() {
        let mut req = vec![0u8; IN_HEADER + 64];
        set_word(&mut req, 4, FUSE_INIT);
        assert_eq!(opcode(&req), Some(FUSE_INIT));
        assert!(!offers(&req, 1 << 9));
        set_word(&mut req, IN_HEADER + 12, INIT_EXT);
        set_word(&mut req, IN_HEADER + 16, 1 << 9);
        assert!(offers(&req, 1 << 9) && !offers(&req, 1 << 5));
        assert!(!offers(&req[..IN_HEADER + 8], 1 << 9));

        let mut r = vec![0u8; OUT_HEADER + 64];
        set_word(&mut r, OUT_HEADER + 12, 0x41);
        assert!(ask(&mut r, 1 << 9));
        assert_eq!(word(&r, OUT_HEADER + 12), Some(0x41 | INIT_EXT));
        assert_eq!(word(&r, OUT_HEADER + 32), Some(1 << 9));
        let mut err = vec![0u8; OUT_HEADER + 64];
        set_word(&mut err, 4, (-libc::EPROTO) as u32);
        assert!(!ask(&mut err, 1 << 9));
        assert!(!ask(&mut [0u8; OUT_HEADER + 24], 1 << 9));
    }
}
