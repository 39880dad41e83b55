"""--repeatable builds: byte-identical outputs for identical trees, and
changes that stay local to what was changed."""

from __future__ import annotations

import os

import pytest

import fixture as fx
import treecmp
import util

SETTINGS = dict(compressor="zstd", digester="blake3", chunk_size=0x100000)


def _unpacked(img: util.Image, tmp) -> treecmp.Tree:
    tar = tmp / f"{img.out.name}.tar"
    util.unpack(img, tar)
    return treecmp.load_tar(tar)


def _assert_identical(a: util.Image, b: util.Image) -> None:
    assert a.blob_ids == b.blob_ids, f"blob ids differ: {a.blob_ids} vs {b.blob_ids}"
    for i in range(len(a.blob_ids)):
        assert a.blob_path(i).read_bytes() == b.blob_path(i).read_bytes(), "blob bytes differ"
    ba, bb = a.bootstrap.read_bytes(), b.bootstrap.read_bytes()
    if ba != bb:
        first = next((i for i in range(min(len(ba), len(bb))) if ba[i] != bb[i]),
                     min(len(ba), len(bb)))
        pytest.fail(f"bootstraps differ ({len(ba)} vs {len(bb)} bytes), first difference "
                    f"at offset {first:#x}: {a.bootstrap} vs {b.bootstrap}", pytrace=False)
    ia = {k: v for k, v in a.info.items() if k != "bootstrap" and "path" not in k}
    ib = {k: v for k, v in b.info.items() if k != "bootstrap" and "path" not in k}
    assert ia == ib, f"-J outputs differ:\n{ia}\n{ib}"


@pytest.mark.parametrize("compressor", ["none", "lz4_block", "zstd"])
def test_repeatable_same_tree_twice(nydus, tmp_path, src_small, compressor):
    kw = dict(SETTINGS, compressor=compressor)
    a = util.create(src_small.path, tmp_path / "one", name="first.boot", **kw)
    b = util.create(src_small.path, tmp_path / "two" / "deeper", name="second.boot", **kw)
    _assert_identical(a, b)


def test_repeatable_independent_of_location_and_inode_numbers(nydus, tmp_path):
    """The same tree generated twice at different paths (different inode
    numbers, ctimes, atimes, directory creation order on disk) must give
    identical outputs."""
    s1 = fx.make_fixture(tmp_path / "a" / "src", big_sparse_mib=8)
    s2 = fx.make_fixture(tmp_path / "b" / "some" / "other" / "place", big_sparse_mib=8)
    t1, t2 = treecmp.load_dir(s1), treecmp.load_dir(s2)
    assert not treecmp.compare(t1, t2), "fixture generator is not deterministic"
    a = util.create(s1, tmp_path / "out1", **SETTINGS)
    b = util.create(s2, tmp_path / "out2", **SETTINGS)
    _assert_identical(a, b)


def test_repeatable_independent_of_cpu_count(nydus, tmp_path, src_small):
    """One CPU (one worker thread) vs all CPUs: same bytes."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("only one CPU available")
    kw = dict(SETTINGS, chunk_size=0x1000)
    a = util.create(src_small.path, tmp_path / "one-cpu", cpus={min(os.sched_getaffinity(0))},
                    **kw)
    b = util.create(src_small.path, tmp_path / "all-cpus", **kw)
    _assert_identical(a, b)


def test_content_change_is_local(nydus, tmp_path):
    src = fx.make_fixture(tmp_path / "src", big_sparse_mib=8)
    base = util.create(src, tmp_path / "base", **SETTINGS)
    base_tree = _unpacked(base, tmp_path)

    victim = src / "files/random_3m"
    st = os.stat(victim)
    with open(victim, "r+b") as f:          # same size, same mtime, new bytes
        f.seek(0x123457)
        old = f.read(1)
        f.seek(0x123457)
        f.write(bytes([old[0] ^ 0x40]))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    changed = util.create(src, tmp_path / "changed", **SETTINGS)
    assert changed.blob_ids != base.blob_ids, "blob id did not change with the content"
    assert changed.bootstrap.read_bytes() != base.bootstrap.read_bytes()
    assert changed.info["chunks"] == base.info["chunks"]
    changed_tree = _unpacked(changed, tmp_path)
    diffs = treecmp.compare(base_tree, changed_tree)
    assert diffs and all(d.startswith("'files/random_3m': sha256") for d in diffs), \
        "expected exactly the content of files/random_3m to differ:\n" + "\n".join(diffs)


def test_mtime_change_keeps_blob(nydus, tmp_path):
    src = fx.make_fixture(tmp_path / "src", big_sparse_mib=8)
    base = util.create(src, tmp_path / "base", **SETTINGS)
    base_tree = _unpacked(base, tmp_path)

    victim = src / "dup/orig"
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1))   # one nanosecond later

    touched = util.create(src, tmp_path / "touched", **SETTINGS)
    assert touched.blob_ids == base.blob_ids, "blob id changed although no data changed"
    assert touched.blob_path(0).read_bytes() == base.blob_path(0).read_bytes()
    assert touched.bootstrap.read_bytes() != base.bootstrap.read_bytes(), \
        "bootstrap unchanged although an mtime changed (by 1 ns)"
    touched_tree = _unpacked(touched, tmp_path)
    diffs = treecmp.compare(base_tree, touched_tree)
    assert len(diffs) == 1 and diffs[0].startswith("'dup/orig': mtime_ns"), \
        "expected exactly the mtime of dup/orig to differ:\n" + "\n".join(diffs)
