"""pytest configuration for the nydus-image end-to-end suite.

Run:   python3 -m pytest tests/e2e -q
Env:   NYDUS_IMAGE         binary under test (default <repo>/target/release/nydus-image)
       NYDUS_E2E_BIG_MIB   size of the big sparse file in the "full" fixture (default 300)
       NYDUS_E2E_FUZZ      number of bootstrap fuzz cases (default 2000)
       NYDUS_E2E_FUSE_URING  1: turn the kernel's FUSE over io_uring on for the
                           session (nydusd then serves requests over io_uring);
                           otherwise it is turned off (restored at the end)
Needs root (mknod, chown, trusted.* xattrs, mount).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixture as fx  # noqa: E402
import treecmp  # noqa: E402
import util  # noqa: E402

BIG_SPARSE_MIB = int(os.environ.get("NYDUS_E2E_BIG_MIB", "300"))
SMALL_SPARSE_MIB = 8


def pytest_report_header(config):
    p = util.nydus_path()
    state = "present" if p.is_file() else "MISSING"
    lines = [f"nydus-image: {p} ({state}); big sparse file: {BIG_SPARSE_MIB} MiB; "
             f"FUSE over io_uring: {'on' if FUSE_URING else 'off'}"]
    if not os.path.exists("/dev/loop-control"):
        lines.append("WARNING: /dev/loop-control absent: kernel EROFS tests will be SKIPPED")
    return lines


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.exit("the e2e suite must run as root (mknod, chown, trusted.* xattrs, mount)",
                    returncode=4)


ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")
FUSE_URING = os.environ.get("NYDUS_E2E_FUSE_URING") == "1"


@pytest.fixture(scope="session", autouse=True)
def _fuse_uring_switch(_require_root):
    """The kernel's FUSE-over-io_uring switch, as NYDUS_E2E_FUSE_URING asks."""
    if not ENABLE_URING.exists():
        if FUSE_URING:
            pytest.exit(f"NYDUS_E2E_FUSE_URING=1 but {ENABLE_URING} is missing: this kernel "
                        "has no FUSE over io_uring (CONFIG_FUSE_IO_URING)", returncode=4)
        yield
        return
    before = ENABLE_URING.read_text().strip()
    ENABLE_URING.write_text("Y" if FUSE_URING else "N")
    try:
        yield
    finally:
        ENABLE_URING.write_text(before)


@pytest.fixture(scope="session")
def nydus() -> Path:
    """The binary under test.  A missing binary is a failure, not a skip."""
    p = util.nydus_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"nydus-image binary not found at {p}: run `cargo build --release` "
                    "or set NYDUS_IMAGE", pytrace=False)
    return p


class Source:
    """A fixture tree on disk plus its canonical form (computed once)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._tree = None
        self._chunk_stats: dict = {}

    @property
    def tree(self) -> treecmp.Tree:
        if self._tree is None:
            self._tree = treecmp.load_dir(self.path, content=True)
        return self._tree

    def entry_count(self) -> int:
        return len(self.tree.entries)

    def inode_count(self) -> int:
        return len(self.tree.entries) - sum(len(g) - 1 for g in self.tree.hardlinks)

    def regular_inodes(self) -> list:
        """Relative paths of regular files, one per inode."""
        seen_groups = set()
        out = []
        for rel, e in sorted(self.tree.entries.items()):
            if e["type"] != "reg":
                continue
            group = next((g for g in self.tree.hardlinks if rel in g), None)
            if group is not None:
                if group in seen_groups:
                    continue
                seen_groups.add(group)
            out.append(rel)
        return out

    def chunk_stats(self, chunk_size: int) -> dict:
        """total: chunk references (one per chunk of each regular inode);
        unique: distinct chunk contents; unique_bytes: their total size;
        unique_bytes_4k: the same with each chunk rounded up to 4 KiB."""
        if chunk_size not in self._chunk_stats:
            import hashlib
            total = 0
            uniq = {}
            for rel in self.regular_inodes():
                with open(self.path / rel, "rb") as f:
                    while True:
                        piece = f.read(chunk_size)
                        if not piece:
                            break
                        total += 1
                        uniq.setdefault(hashlib.sha256(piece).digest(), len(piece))
            self._chunk_stats[chunk_size] = {
                "total": total,
                "unique": len(uniq),
                "unique_bytes": sum(uniq.values()),
                "unique_bytes_4k": sum((n + 4095) // 4096 * 4096 for n in uniq.values()),
            }
        return self._chunk_stats[chunk_size]


@pytest.fixture(scope="session")
def src_full(tmp_path_factory) -> Source:
    """The full fixture, with a BIG_SPARSE_MIB (300) MiB sparse file."""
    path = tmp_path_factory.mktemp("fixture-full") / "src"
    fx.make_fixture(path, big_sparse_mib=BIG_SPARSE_MIB)
    return Source(path)


@pytest.fixture(scope="session")
def src_small(tmp_path_factory) -> Source:
    """The full fixture with an 8 MiB sparse file instead of 300 MiB."""
    path = tmp_path_factory.mktemp("fixture-small") / "src"
    fx.make_fixture(path, big_sparse_mib=SMALL_SPARSE_MIB)
    return Source(path)


@pytest.fixture(scope="session")
def src_mini(tmp_path_factory) -> Source:
    path = tmp_path_factory.mktemp("fixture-mini") / "src"
    fx.make_mini_fixture(path)
    return Source(path)


def pytest_collection_modifyitems(config, items):
    # Cheap tests first so that a broken binary is reported quickly.
    order = {"test_cli.py": 0, "test_bad_input.py": 1, "test_determinism.py": 2,
             "test_roundtrip.py": 3, "test_kernel.py": 4}
    items.sort(key=lambda it: order.get(Path(str(it.fspath)).name, -1))
