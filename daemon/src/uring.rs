//! FUSE over io_uring (Linux 6.14 or later, with the `fuse` module's
//! `enable_uring` parameter on).
//!
//! The kernel keeps one request queue per CPU and hands a request to an
//! entry registered on the queue of the CPU the caller runs on. Each queue
//! here gets its own threads, pinned to that CPU, each owning an io_uring
//! with one registered entry: a request is answered on the CPU that asked
//! for it, and the answer and the wait for the next request are one
//! `io_uring_enter`. With `/dev/fuse` a request wakes a worker wherever it
//! sleeps and costs a `read` and a `write`.
//!
//! An entry is a 288-byte header area (`fuse_uring_req_header`: the in/out
//! header, the opcode's own header, and `fuse_uring_ent_in_out`) and a
//! payload buffer of the connection's largest request. Requests are put
//! back together as `/dev/fuse` would deliver them and handed to the same
//! `Server` the `/dev/fuse` workers use; its reply is buffered into the
//! entry's payload buffer, with the out header just before it.
//!
//! `FUSE_INIT`, `FORGET` and `INTERRUPT` still come through `/dev/fuse`,
//! so the ordinary workers keep running. If registering fails (io_uring not
//! negotiated, or refused), the kernel goes on with `/dev/fuse` alone.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::init::{self, IN_HEADER, OUT_HEADER};

/// `FUSE_IO_URING_CMD_REGISTER` and `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, then
/// `fuse_uring_ent_in_out { flags, commit_id: u64, payload_sz: u32, .. }`.
const OP_IN: usize = 128;
const OP_IN_MAX: usize = 128;
const ENT_COMMIT_ID: usize = 256 + 8;
const ENT_PAYLOAD_SZ: usize = 256 + 16;
const HEADER_SIZE: usize = 288;

/// `FUSE_OVER_IO_URING` (bit 41) as a `flags2` bit of `fuse_init_in/out`.
const OVER_IO_URING2: u32 = 1 << (41 - 32);
/// Whether `FUSE_INIT` request `req` offers io_uring (the kernel offers it
/// only while `enable_uring` is on).
pub fn init_offers_io_uring(req: &[u8]) -> bool {
    init::offers(req, OVER_IO_URING2)
}

/// Ask for io_uring in `FUSE_INIT` reply `reply` (header included); false
/// for an error reply or one too short to carry `flags2`.
pub fn ask_io_uring(reply: &mut [u8]) -> bool {
    init::ask(reply, OVER_IO_URING2)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One registered entry. Boxed by the caller: the kernel keeps the
/// addresses of `header` and of `buf[OUT_HEADER..]` while it is registered.
struct RingEntry {
    header: [u8; HEADER_SIZE],
    /// The out header's place, then the payload buffer the kernel sees.
    buf: Vec<u8>,
    iov: [libc::iovec; 2],
}

impl RingEntry {
    fn new(payload: usize) -> Box<Self> {
        let mut e = Box::new(Self {
            header: [0; HEADER_SIZE],
            buf: vec![0; OUT_HEADER + payload],
            iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
        });
        e.iov[0] = libc::iovec { iov_base: e.header.as_mut_ptr().cast(), iov_len: HEADER_SIZE };
        // SAFETY: in bounds: `buf` holds OUT_HEADER + payload bytes.
        let payload_ptr = unsafe { e.buf.as_mut_ptr().add(OUT_HEADER) };
        e.iov[1] = libc::iovec { iov_base: payload_ptr.cast(), iov_len: payload };
        e
    }

    /// The SQE registering this entry (`commit_id` 0) or committing its
    /// answer to request `commit_id` and fetching the next one.
    fn sqe(&self, dev: &File, qid: u16, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op)
            .cmd(cmd)
            .addr(Some(self.iov.as_ptr() as u64))
            .build();
        // The kernel wants the iovec count in the SQE's `len` (offset 24),
        // which the builder does not set.
        // SAFETY: `Entry128` is `repr(C)`, 128 bytes of plain integer fields
        // (`io_uring_sqe` plus the command's last 64 bytes): every byte
        // pattern is valid for it and for the array.
        let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
        // SAFETY: as above.
        let sqe: squeue::Entry128 = unsafe { std::mem::transmute(raw) };
        sqe.user_data(commit_id)
    }

    /// Put the request the kernel wrote into this entry back together in
    /// `req` as `/dev/fuse` delivers it; returns its length.
    fn request(&self, req: &mut [u8]) -> io::Result<usize> {
        let len = u32_at(&self.header, 0) as usize;
        let payload = u32_at(&self.header, ENT_PAYLOAD_SZ) as usize;
        let op = len
            .checked_sub(IN_HEADER + payload)
            .filter(|&op| op <= OP_IN_MAX && len <= req.len() && payload <= self.buf.len() - OUT_HEADER)
            .ok_or_else(|| io::Error::other(format!("malformed ring request: len {len}, payload {payload}")))?;
        req[..IN_HEADER].copy_from_slice(&self.header[..IN_HEADER]);
        req[IN_HEADER..IN_HEADER + op].copy_from_slice(&self.header[OP_IN..OP_IN + op]);
        req[IN_HEADER + op..len].copy_from_slice(&self.buf[OUT_HEADER..OUT_HEADER + payload]);
        Ok(len)
    }

    /// Move the reply the server buffered in `buf` into place: the out
    /// header into the header area, its length into `payload_sz`. A missing
    /// or malformed reply becomes `EIO` for request `unique`.
    fn finish_reply(&mut self, unique: u64) {
        let len = u32_at(&self.buf, 0) as usize;
        if len < OUT_HEADER || len > self.buf.len() || u64_at(&self.buf, 8) != unique {
            self.buf[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
            self.buf[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
            self.buf[8..16].copy_from_slice(&unique.to_ne_bytes());
        }
        let len = u32_at(&self.buf, 0) as usize;
        let (hdr, rest) = self.header.split_at_mut(OUT_HEADER);
        hdr.copy_from_slice(&self.buf[..OUT_HEADER]);
        rest[ENT_PAYLOAD_SZ - OUT_HEADER..ENT_PAYLOAD_SZ - OUT_HEADER + 4]
            .copy_from_slice(&((len - OUT_HEADER) as u32).to_ne_bytes());
    }
}

/// Fewest threads (each with one registered entry) per kernel queue: a
/// request that waits for the backend does not hold up the next one from
/// that CPU.
const MIN_THREADS_PER_QUEUE: usize = 2;

/// Threads per queue for `threads` FUSE threads in all (`--thread-num`)
/// over `queues` queues: that many in all, spread over the queues, and at
/// least [`MIN_THREADS_PER_QUEUE`] on each.
pub fn threads_per_queue(threads: usize, queues: usize) -> usize {
    threads.div_ceil(queues.max(1)).max(MIN_THREADS_PER_QUEUE)
}
/// Payload buffer per entry: at least the kernel's largest request or reply
/// payload (`max_write` and `max_pages` are 1 MiB here).
const PAYLOAD: usize = (1 << 20) + 0x1000;
/// Submission queue size of each thread's ring (one entry in flight).
const RING_SIZE: u32 = 4;

/// The `fuse` module's switch for FUSE over io_uring.
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel offers FUSE over io_uring to new connections: `None`
/// for a kernel without it, else whether its switch is on.
pub fn offered() -> Option<bool> {
    std::fs::read_to_string(ENABLE_URING).ok().map(|v| matches!(v.trim(), "Y" | "1"))
}

/// What the queue threads of one session share: each fact is logged once.
#[derive(Default)]
pub struct RingState {
    in_use: AtomicBool,
    refused: AtomicBool,
    queues: usize,
    threads_per_queue: usize,
}

impl RingState {
    /// The state of a session with `threads_per_queue` threads on each of
    /// its `queues` queues.
    pub fn new(queues: usize, threads_per_queue: usize) -> Self {
        Self { queues, threads_per_queue, ..Self::default() }
    }
}

/// Queue ids travel as `u16`.
pub const MAX_QUEUES: usize = u16::MAX as usize + 1;

/// One queue thread's io_uring, made before `FUSE_INIT` is answered: once
/// the kernel agrees to io_uring it holds every request until each queue
/// has an entry, so a ring that cannot be made must mean not asking.
pub struct QueueRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// Where the writer's final flush of a buffered reply goes.
    sink: File,
}

impl QueueRing {
    /// A ring for one queue thread.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::builder().build(RING_SIZE)?;
        let sink = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        Ok(Self { ring, sink })
    }
}

/// Serve queue `qid` of the session behind `dev` with `ring` until the
/// connection ends. If the kernel refuses the entry, the session goes on
/// through `/dev/fuse` (logged once per session).
pub fn serve_queue<F: FileSystem + Sync>(
    server: &Server<F>,
    dev: &File,
    qid: usize,
    ring: QueueRing,
    state: &RingState,
) {
    match run(server, dev, qid, ring, state) {
        Ok(()) => tracing::debug!(qid, "FUSE io_uring queue ended"),
        Err(e) if !state.in_use.load(Ordering::Relaxed) => {
            if !state.refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "the kernel refused FUSE over io_uring; requests go through /dev/fuse");
            }
        }
        Err(e) => tracing::error!(error = %e, qid, "a FUSE io_uring queue thread stopped"),
    }
}

fn run<F: FileSystem + Sync>(
    server: &Server<F>,
    dev: &File,
    qid: usize,
    QueueRing { mut ring, sink }: QueueRing,
    state: &RingState,
) -> io::Result<()> {
    pin_to_cpu(qid);
    // Callers keep qid below MAX_QUEUES.
    let qid16 = qid as u16;
    let mut entry = RingEntry::new(PAYLOAD);
    let mut req = vec![0u8; IN_HEADER + OP_IN_MAX + PAYLOAD];
    let mut stalled = Duration::ZERO;
    let mut pending = Some(entry.sqe(dev, qid16, CMD_REGISTER, 0));
    let mut registered = false;
    loop {
        if let Some(sqe) = pending.take() {
            // SAFETY: the SQE points at `entry`'s iovecs and buffers, which stay
            // where they are (boxed, never moved) until this function returns;
            // by then the kernel has completed the command (the connection
            // ended) or the ring is dropped, which cancels it.
            unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => stalled = Duration::ZERO,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            // Whatever was not submitted is still queued: try again, slower and
            // slower. Giving up would leave this CPU's requests unanswered (the
            // kernel holds them for this queue's entries).
            Err(e) => {
                if stalled.is_zero() {
                    tracing::warn!(error = %e, qid, "io_uring_enter failed; retrying");
                }
                stalled = (stalled * 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
                std::thread::sleep(stalled);
            }
        }
        let Some(cqe) = ring.completion().next() else { continue };
        let res = cqe.result();
        if res < 0 {
            match -res {
                // FUSE_INIT is not processed yet: ask again.
                libc::EAGAIN if !registered => {
                    std::thread::sleep(Duration::from_millis(1));
                    pending = Some(entry.sqe(dev, qid16, CMD_REGISTER, 0));
                    continue;
                }
                // The connection ended (unmount, abort) or the ring is going away.
                libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV => return Ok(()),
                // The kernel refused the entry: it goes on with /dev/fuse.
                e if !registered => return Err(io::Error::from_raw_os_error(e)),
                // A commit the kernel could not match (the request ended on its
                // side): the entry was not re-armed, so register it afresh.
                e => {
                    tracing::warn!(error = %io::Error::from_raw_os_error(e), qid, "io_uring commit failed; registering the entry again");
                    pending = Some(entry.sqe(dev, qid16, CMD_REGISTER, 0));
                    continue;
                }
            }
        }
        registered = true;
        if !state.in_use.swap(true, Ordering::Relaxed) {
            tracing::info!(
                queues = state.queues,
                threads_per_queue = state.threads_per_queue,
                "serving FUSE requests over io_uring"
            );
        }
        let unique = u64_at(&entry.header, 8);
        let commit_id = u64_at(&entry.header, ENT_COMMIT_ID);
        entry.buf[..4].copy_from_slice(&0u32.to_ne_bytes());
        if let Err(e) = handle(server, &mut entry, &mut req, &sink) {
            tracing::warn!(error = %e, "answering an io_uring request with EIO");
        }
        entry.finish_reply(unique);
        pending = Some(entry.sqe(dev, qid16, CMD_COMMIT_AND_FETCH, commit_id));
    }
}

/// Answer the request in `entry` (put together in `req`) through `server`;
/// the reply is left in `entry.buf`. On an error nothing is left there,
/// which [`RingEntry::finish_reply`] turns into `EIO`.
fn handle<F: FileSystem + Sync>(
    server: &Server<F>,
    entry: &mut RingEntry,
    req: &mut [u8],
    sink: &File,
) -> io::Result<()> {
    let len = entry.request(req)?;
    let other = |e: fuse_backend_rs::transport::Error| io::Error::other(e.to_string());
    let reader = Reader::from_fuse_buffer(FuseBuf::new(&mut req[..len])).map_err(other)?;
    let mut writer = FuseDevWriter::<()>::new(sink.as_raw_fd(), &mut entry.buf).map_err(other)?;
    let full = writer.available_bytes();
    // Buffered from here on: all of the reply stays in `entry.buf`, and only
    // the final flush of a split reply (reads) is written, to `sink`.
    let _rest = writer.split_at(full).map_err(other)?;
    if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
        tracing::debug!(error = %e, "FUSE reply failed");
    }
    Ok(())
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: `set` is a zeroed cpu_set_t, filled and read by libc's macros
    // and sched_setaffinity within its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(cpu, error = %io::Error::last_os_error(), "cannot pin a FUSE queue thread");
        }
    }
}

/// The number of kernel FUSE queues: one per possible CPU.
pub fn queue_count() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            n = n.max(b + 1).max(a + 1);
        }
    }
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_out(flags: u32, flags2: u32, error: i32) -> Vec<u8> {
        let mut r = vec![0u8; OUT_HEADER + 64];
        r[4..8].copy_from_slice(&error.to_ne_bytes());
        r[OUT_HEADER + 12..OUT_HEADER + 16].copy_from_slice(&flags.to_ne_bytes());
        r[OUT_HEADER + 32..OUT_HEADER + 36].copy_from_slice(&flags2.to_ne_bytes());
        r
    }

    const INIT_EXT: u32 = 1 << 30;

    #[test]
    fn init_asks_for_io_uring_only_when_offered_and_fine() {
        let mut req = vec![0u8; IN_HEADER + 64];
        assert!(!init_offers_io_uring(&req));
        req[IN_HEADER + 12..IN_HEADER + 16].copy_from_slice(&INIT_EXT.to_ne_bytes());
        req[IN_HEADER + 16..IN_HEADER + 20].copy_from_slice(&OVER_IO_URING2.to_ne_bytes());
        assert!(init_offers_io_uring(&req));
        assert!(!init_offers_io_uring(&req[..IN_HEADER + 8]));

        let mut ok = init_out(1, 1 << 5, 0);
        assert!(ask_io_uring(&mut ok));
        assert_eq!(u32_at(&ok, OUT_HEADER + 12), 1 | INIT_EXT);
        assert_eq!(u32_at(&ok, OUT_HEADER + 32), (1 << 5) | OVER_IO_URING2);
        let mut err = init_out(0, 0, -libc::EPROTO);
        assert!(!ask_io_uring(&mut err));
        assert!(!ask_io_uring(&mut init_out(0, 0, 0)[..OUT_HEADER + 8].to_vec()));
    }

    /// An entry as the kernel fills it: in header, `op` header bytes, payload.
    fn filled(op: &[u8], payload: &[u8], unique: u64) -> Box<RingEntry> {
        let mut e = RingEntry::new(4096);
        let len = (IN_HEADER + op.len() + payload.len()) as u32;
        e.header[..4].copy_from_slice(&len.to_ne_bytes());
        e.header[4..8].copy_from_slice(&1u32.to_ne_bytes());
        e.header[8..16].copy_from_slice(&unique.to_ne_bytes());
        e.header[OP_IN..OP_IN + op.len()].copy_from_slice(op);
        e.header[ENT_PAYLOAD_SZ..ENT_PAYLOAD_SZ + 4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        e.buf[OUT_HEADER..OUT_HEADER + payload.len()].copy_from_slice(payload);
        e
    }

    #[test]
    fn threads_are_spread_over_the_queues() {
        assert_eq!(threads_per_queue(4, 2), 2);
        assert_eq!(threads_per_queue(16, 2), 8);
        assert_eq!(threads_per_queue(5, 2), 3);
        assert_eq!(threads_per_queue(4, 64), 2);
        assert_eq!(threads_per_queue(1, 0), 2);
    }

    #[test]
    fn requests_are_put_back_together() {
        let e = filled(&[7; 16], b"name\0", 42);
        let mut req = vec![0u8; 512];
        let n = e.request(&mut req).unwrap();
        assert_eq!(n, IN_HEADER + 16 + 5);
        assert_eq!(u64_at(&req, 8), 42);
        assert_eq!(&req[IN_HEADER..IN_HEADER + 16], &[7; 16]);
        assert_eq!(&req[IN_HEADER + 16..n], b"name\0");
        // A length that cannot hold the payload, or an op header over 128 bytes.
        let mut bad = filled(&[], b"xyz", 1);
        bad.header[..4].copy_from_slice(&(IN_HEADER as u32).to_ne_bytes());
        assert!(bad.request(&mut req).is_err());
        let mut bad = filled(&[], b"", 1);
        bad.header[..4].copy_from_slice(&((IN_HEADER + 200) as u32).to_ne_bytes());
        assert!(bad.request(&mut req).is_err());
        let e = filled(&[], &[1; 100], 1);
        assert!(e.request(&mut req[..IN_HEADER + 50]).is_err());
    }

    #[test]
    fn replies_are_moved_into_place_or_become_eio() {
        let mut e = RingEntry::new(4096);
        let len = (OUT_HEADER + 3) as u32;
        e.buf[..4].copy_from_slice(&len.to_ne_bytes());
        e.buf[8..16].copy_from_slice(&9u64.to_ne_bytes());
        e.buf[OUT_HEADER..OUT_HEADER + 3].copy_from_slice(b"abc");
        e.finish_reply(9);
        assert_eq!(&e.header[..OUT_HEADER], &e.buf[..OUT_HEADER]);
        assert_eq!(u32_at(&e.header, ENT_PAYLOAD_SZ), 3);
        // Nothing written (or for another request): EIO with no payload.
        let mut e = RingEntry::new(4096);
        e.finish_reply(5);
        assert_eq!(u32_at(&e.header, 0), OUT_HEADER as u32);
        assert_eq!(u32_at(&e.header, 4) as i32, -libc::EIO);
        assert_eq!(u64_at(&e.header, 8), 5);
        assert_eq!(u32_at(&e.header, ENT_PAYLOAD_SZ), 0);
    }

    #[test]
    fn sqes_carry_the_iovecs_and_the_command() {
        let e = RingEntry::new(4096);
        let dev = File::open("/dev/null").unwrap();
        let sqe = e.sqe(&dev, 3, CMD_COMMIT_AND_FETCH, 77);
        // SAFETY: as in `RingEntry::sqe`.
        let raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(raw[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(u32_at(&raw, 8), CMD_COMMIT_AND_FETCH);
        assert_eq!(u64_at(&raw, 16), e.iov.as_ptr() as u64);
        assert_eq!(u32_at(&raw, 24), 2);
        // fuse_uring_cmd_req at the command area (offset 48): flags, commit_id, qid.
        assert_eq!(u64_at(&raw, 48 + 8), 77);
        assert_eq!(u16::from_ne_bytes([raw[48 + 16], raw[48 + 17]]), 3);
        assert_eq!(e.iov[0].iov_len, HEADER_SIZE);
        assert_eq!(e.iov[1].iov_len, 4096);
    }
}
