"""nydusd mounts an image and shows exactly the source tree.

Every compressor x chunk size (blake3 digests).  The eight-MiB "small"
fixture is used for all nine combinations; the 300 MiB one for one more
(reading 300 MiB through FUSE costs seconds, and the extra size exercises
no other code).  The three ways to configure the daemon (v1 JSON, v2 TOML,
--localfs-dir) rotate over the combinations, so each meets every
compressor.

Compared (treecmp): names, types, modes, owners, sizes, nanosecond mtimes,
xattrs (including ACLs and capabilities), symlink targets, device numbers,
content, hard links (same st_ino for all names) and link counts; sockets
appear as sockets.
"""

from __future__ import annotations

import itertools
import mmap
import os

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from util import CHUNK_SIZES, COMPRESSORS

STYLES = ("v1", "v2", "localfs-dir")
BIG_COMBO = ("zstd", 0x1000)


def _combos():
    for i, (c, cs) in enumerate(itertools.product(COMPRESSORS, CHUNK_SIZES)):
        style = STYLES[(i + i // 3) % 3]
        yield pytest.param(c, cs, False, style, id=f"{c}-{cs:#x}-{style}")
    c, cs = BIG_COMBO
    yield pytest.param(c, cs, True, "v1", id=f"{c}-{cs:#x}-v1-big", marks=[pytest.mark.slow])


def check_mmap_and_direct(src_root, mnt, rel):
    want = (src_root / rel).read_bytes()
    with open(mnt / rel, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == want, f"{rel}: mmap read differs"
    fd = os.open(mnt / rel, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 1 << 20)            # page-aligned buffer
        for off in (0, 0x1000, 0xFF000, len(want) - len(want) % 4096):
            n = os.preadv(fd, [buf], off)
            assert buf[:n] == want[off:off + n] and n == min(1 << 20, len(want) - off), \
                f"{rel}: O_DIRECT pread at {off:#x} returned {n} bytes, differing"
        buf.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize("compressor,chunk_size,big,style", list(_combos()))
def test_mount_matches_source(request, daemons, tmp_path, compressor, chunk_size, big, style):
    src = request.getfixturevalue("src_full" if big else "src_small")
    img = util.create(src.path, tmp_path / "out", compressor=compressor, digester="blake3",
                      chunk_size=chunk_size)
    blob_before = util.sha256_file(img.blob_path())
    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt", cache, style=style)

    mounted = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(src.tree, mounted)
    assert not diffs, treecmp.format_diffs(diffs, src.tree, mounted) + "\n" + d.describe()
    assert d.alive(), d.describe()

    # Hard links: one inode number for all names, and the right link count.
    for group in src.tree.hardlinks:
        sts = {rel: os.lstat(d.mountpoint / rel) for rel in group}
        inos = {st.st_ino for st in sts.values()}
        assert len(inos) == 1, f"hard link group {sorted(group)} has inode numbers " \
                               f"{ {r: s.st_ino for r, s in sts.items()} }"
        assert all(st.st_nlink == len(group) for st in sts.values()), \
            f"hard link group {sorted(group)}: nlink {[s.st_nlink for s in sts.values()]}"

    # mmap and O_DIRECT reads (the latter bypass the page cache).
    check_mmap_and_direct(src.path, d.mountpoint, "files/random_3m")

    # The cache lives where the config says, named by blob id.
    cache_dir = img.blob_dir if style == "localfs-dir" else cache
    blob_id = img.blob_ids[0]
    names = util.listing(cache_dir)
    assert f"{blob_id}.blob.data" in names and f"{blob_id}.chunk_map" in names, \
        f"cache files missing in {cache_dir}: {sorted(names)}"

    d.stop()
    d.assert_clean_log()
    assert util.sha256_file(img.blob_path()) == blob_before, "the daemon modified the blob"
