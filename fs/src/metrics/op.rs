//! The FUSE operations that metrics are kept for.

/// One FUSE operation. The first [`Op::UPSTREAM`] variants are in
/// upstream's `StatsFop` order, which fixes the index of each operation in
/// the `fop_hits`/`fop_errors`/`fop_cumulative_latency_total` arrays of the
/// JSON API; the rest are kept for Prometheus only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Op {
    Getattr,
    Readlink,
    Open,
    Release,
    Read,
    Statfs,
    Getxattr,
    Listxattr,
    Opendir,
    Lookup,
    Readdir,
    Readdirplus,
    Access,
    Forget,
    BatchForget,
    Init,
    Destroy,
    Setattr,
    Symlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Link,
    Create,
    Write,
    Flush,
    Fsync,
    Fallocate,
    Setxattr,
    Removexattr,
    Fsyncdir,
    Releasedir,
    Lseek,
    Getlk,
    Setlk,
    Setlkw,
    Ioctl,
    Bmap,
    Poll,
}

impl Op {
    /// Operations that upstream counts (the length of its JSON arrays).
    pub const UPSTREAM: usize = 15;

    /// Every operation, in index order.
    pub const ALL: [Op; 41] = {
        use Op::*;
        [
            Getattr,
            Readlink,
            Open,
            Release,
            Read,
            Statfs,
            Getxattr,
            Listxattr,
            Opendir,
            Lookup,
            Readdir,
            Readdirplus,
            Access,
            Forget,
            BatchForget,
            Init,
            Destroy,
            Setattr,
            Symlink,
            Mknod,
            Mkdir,
            Unlink,
            Rmdir,
            Rename,
            Link,
            Create,
            Write,
            Flush,
            Fsync,
            Fallocate,
            Setxattr,
            Removexattr,
            Fsyncdir,
            Releasedir,
            Lseek,
            Getlk,
            Setlk,
            Setlkw,
            Ioctl,
            Bmap,
            Poll,
        ]
    };

    /// Index in per-operation tables.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name, as used in the `op` label.
    pub fn name(self) -> &'static str {
        use Op::*;
        match self {
            Getattr => "getattr",
            Readlink => "readlink",
            Open => "open",
            Release => "release",
            Read => "read",
            Statfs => "statfs",
            Getxattr => "getxattr",
            Listxattr => "listxattr",
            Opendir => "opendir",
            Lookup => "lookup",
            Readdir => "readdir",
            Readdirplus => "readdirplus",
            Access => "access",
            Forget => "forget",
            BatchForget => "batch_forget",
            Init => "init",
            Destroy => "destroy",
            Setattr => "setattr",
            Symlink => "symlink",
            Mknod => "mknod",
            Mkdir => "mkdir",
            Unlink => "unlink",
            Rmdir => "rmdir",
            Rename => "rename",
            Link => "link",
            Create => "create",
            Write => "write",
            Flush => "flush",
            Fsync => "fsync",
            Fallocate => "fallocate",
            Setxattr => "setxattr",
            Removexattr => "removexattr",
            Fsyncdir => "fsyncdir",
            Releasedir => "releasedir",
            Lseek => "lseek",
            Getlk => "getlk",
            Setlk => "setlk",
            Setlkw => "setlkw",
            Ioctl => "ioctl",
            Bmap => "bmap",
            Poll => "poll",
        }
    }

    /// The FUSE opcode (`FUSE_*` in the kernel's `fuse.h`), as upstream
    /// reports in-flight requests.
    pub fn opcode(self) -> u32 {
        use Op::*;
        match self {
            Lookup => 1,
            Forget => 2,
            Getattr => 3,
            Setattr => 4,
            Readlink => 5,
            Symlink => 6,
            Mknod => 8,
            Mkdir => 9,
            Unlink => 10,
            Rmdir => 11,
            Rename => 12,
            Link => 13,
            Open => 14,
            Read => 15,
            Write => 16,
            Statfs => 17,
            Release => 18,
            Fsync => 20,
            Setxattr => 21,
            Getxattr => 22,
            Listxattr => 23,
            Removexattr => 24,
            Flush => 25,
            Init => 26,
            Opendir => 27,
            Readdir => 28,
            Releasedir => 29,
            Fsyncdir => 30,
            Getlk => 31,
            Setlk => 32,
            Setlkw => 33,
            Access => 34,
            Create => 35,
            Bmap => 37,
            Destroy => 38,
            Ioctl => 39,
            Poll => 40,
            BatchForget => 42,
            Fallocate => 43,
            Readdirplus => 44,
            Lseek => 46,
        }
    }

    /// The operation at `index`.
    pub fn from_index(index: usize) -> Option<Op> {
        Self::ALL.get(index).copied()
    }
}
