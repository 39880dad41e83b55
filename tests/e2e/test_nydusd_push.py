"""Page-cache push: once a read reaches the end of a file, nydusd writes the small files
after it in its directory into the kernel's page cache (FUSE_NOTIFY_STORE), if their
data is already in the blob cache, so reading them costs no FUSE round trip.

Checked with the kernel's own view (mincore on a mapping: are the pages resident without
a read?), nydusd's FUSE read counter (through the API), and the bytes themselves.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time

import pytest

import util
from nydusd import chunk_map, daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_api import Api, wait_socket

MiB = 1 << 20
FILES = 40
SIZE = 12 * 1024 + 5

libc = ctypes.CDLL(None, use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident(path) -> bool:
    """Whether every page of `path` is in the page cache, asked with mincore on a
    mapping (which issues no read)."""
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = ctypes.create_string_buffer(pages)
    with open(path, "rb") as f:
        # Private and writable only so that ctypes can take the mapping's address;
        # nothing is written.
        m = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            view = ctypes.c_char.from_buffer(m)
            rc = libc.mincore(ctypes.addressof(view), size, vec)
            del view
            if rc != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            m.close()
    return all(b & 1 for b in vec.raw)


@pytest.fixture(scope="module")
def push_image(tmp_path_factory):
    base = tmp_path_factory.mktemp("push")
    src = base / "src"
    for d in ("d", "e"):
        (src / d).mkdir(parents=True)
        for k in range(FILES):
            (src / d / f"f{k:03}").write_bytes(os.urandom(SIZE))
    img = util.create(src, base / "out", compressor="zstd", digester="blake3")
    return src, img


def read_count(api: Api) -> int:
    # fop_hits follows upstream's StatsFop order: getattr, readlink, open, release, read, ...
    return api.ok("GET", "/api/v1/metrics")["fop_hits"][4]


def mount(daemons, tmp_path, img, amplify_io):
    sock = tmp_path / "api.sock"
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache", amplify_io=amplify_io,
                      extra=["--apisock", sock])
    wait_socket(sock, d)
    return d, Api(sock)


def test_cached_siblings_are_pushed_and_read_without_round_trips(daemons, tmp_path, push_image):
    src, img = push_image
    d, api = mount(daemons, tmp_path, img, MiB)
    mnt = d.mountpoint
    names = sorted(os.listdir(mnt / "d"))
    assert names == sorted(os.listdir(src / "d"))
    before = read_count(api)
    # One read of the first file fetches the whole directory's data (1 MiB merge) and,
    # at its end, pushes the siblings.
    assert (mnt / "d" / names[0]).read_bytes() == (src / "d" / names[0]).read_bytes()
    deadline = time.monotonic() + 20
    while not all(resident(mnt / "d" / n) for n in names[1:]):
        assert time.monotonic() < deadline, "siblings never reached the page cache\n" + d.describe()
        time.sleep(0.05)
    after_first = read_count(api)
    assert after_first - before >= 1
    for n in names[1:]:
        assert (mnt / "d" / n).read_bytes() == (src / "d" / n).read_bytes(), n
    assert read_count(api) == after_first, "pushed files still went through FUSE reads"
    # The other directory was never listed nor read: nothing of it is resident.
    os.listdir(mnt / "e")
    assert not any(resident(mnt / "e" / n) for n in sorted(os.listdir(mnt / "e"))[1:])
    d.assert_clean_log()


def test_nothing_is_fetched_to_push(daemons, tmp_path, push_image):
    """Without merged fetches the siblings are not cached: reading one file pushes
    nothing and caches only its own chunk."""
    src, img = push_image
    d, api = mount(daemons, tmp_path, img, 0)
    mnt = d.mountpoint
    names = sorted(os.listdir(mnt / "d"))
    assert (mnt / "d" / names[0]).read_bytes() == (src / "d" / names[0]).read_bytes()
    time.sleep(0.5)
    cm = chunk_map(tmp_path / "cache", img.blob_ids[0])
    assert cm is not None
    assert len(cm[1]) == 1, f"push fetched chunks: ready {sorted(cm[1])}"
    assert not any(resident(mnt / "d" / n) for n in names[1:])
    before = read_count(api)
    for n in names[1:]:
        assert (mnt / "d" / n).read_bytes() == (src / "d" / n).read_bytes(), n
    assert read_count(api) - before == len(names) - 1
    d.assert_clean_log()
