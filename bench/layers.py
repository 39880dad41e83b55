#!/usr/bin/env python3
"""Benchmark of issue 4: building an image from OCI tar.gz layers.

In one run:

1. A 3-layer image from tar.gz layers (>= 300 MB of tar.gz in total):
   wall time of `nydus-image create --type targz-rafs`, layer on layer with
   `--parent-bootstrap` (default compressor zstd, and lz4_block), against
   `tar -xzf` of the same layers into a fresh directory. Target: the build
   takes at most 1.5x the time of the unpacking. Also plain tars: `tar -xf`
   against `--type tar-rafs`.
2. Two releases of the same rootfs (two debootstrap runs, the second with a
   few more packages): blob bytes of release B built alone and built with
   `--chunk-dict bootstrap=<release A's bootstrap>`.

The inputs are prepared once in the work dir (default
/var/tmp/nydus-bench-layers) and reused by later runs. Every timed command
runs after `sync; echo 3 > /proc/sys/vm/drop_caches` (cold page cache).

Python 3 standard library only; reuses helpers of bench/run.py. See
bench/README.md.
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: apt, mirror, /usr/bin/time, machine facts)

REPO = common.REPO
DEFAULT_WORK = "/var/tmp/nydus-bench-layers"
SUITE = "bookworm"
# Release B = release A + these packages (and their dependencies).
RELEASE_B_EXTRA = "curl,ca-certificates,less,procps,vim-tiny"
# Layer 3: real trees of this machine, taken as they are (the ones present).
LAYER3_CANDIDATES = ["usr/lib/llvm-14", "usr/lib/gcc", "usr/lib/python3.11", "usr/lib/jvm"]
LAYER3_MAX = 600 << 20  # stop adding candidates once this many bytes are in
TARGET_RATIO = 1.5
MIB = 1024 * 1024
log, warn, die = common.log, common.warn, common.die


def sh(cmd, **kw):
    """Run a bash pipeline with pipefail; returns the CompletedProcess."""
    return subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], **kw)


def du_bytes(paths):
    """Bytes of regular files (apparent sizes, each inode once) under paths."""
    seen, total = set(), 0
    for top in paths:
        for d, dirs, files in os.walk(top):
            for f in files:
                try:
                    st = os.lstat(os.path.join(d, f))
                except OSError:
                    continue
                if (st.st_mode & 0o170000) == 0o100000 and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def debootstrap(work, name, mirror, include):
    root = os.path.join(work, "src", name)
    if os.path.isdir(root):
        log("input: using cached %s" % root)
        return root
    if os.geteuid() != 0:
        die("debootstrap needs root")
    os.makedirs(os.path.join(work, "src"), exist_ok=True)
    cache = os.path.join(work, "debs")  # .debs shared by both releases
    os.makedirs(cache, exist_ok=True)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["debootstrap", "--variant=minbase", "--cache-dir=" + cache]
    if include:
        cmd.append("--include=" + include)
    cmd += [SUITE, tmp, mirror]
    logf = os.path.join(work, "debootstrap-%s.log" % name)
    log("input: %s (log %s)" % (" ".join(cmd), logf))
    t0 = time.time()
    with open(logf, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        die("debootstrap of %s failed (rc %d), see %s" % (name, r.returncode, logf))
    # As Debian's official images do (debuerreotype, `apt-get clean`): no
    # downloaded .debs, no package lists.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        d = os.path.join(tmp, sub)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p) and f != "lock":
                os.unlink(p)
    os.rename(tmp, root)
    log("input: %s done in %.0f s" % (name, time.time() - t0))
    return root


def dpkg_packages(root):
    """{package: version} of installed packages in a rootfs."""
    pkgs, name, ver, ok = {}, None, None, False
    try:
        with open(os.path.join(root, "var/lib/dpkg/status"), errors="replace") as f:
            lines = f.read().splitlines() + [""]
    except OSError:
        return pkgs
    for line in lines:
        if not line:
            if name and ok:
                pkgs[name] = ver
            name, ver, ok = None, None, False
        elif line.startswith("Package: "):
            name = line.split(None, 1)[1]
        elif line.startswith("Version: "):
            ver = line.split(None, 1)[1]
        elif line.startswith("Status: "):
            ok = line.endswith(" installed")
    return pkgs


def tar_cmd(cdir, members, out, transform=None):
    """A reproducible GNU tar of `members` of `cdir`, gzip -6 (docker's default
    level) without a name/time in the gzip header."""
    t = "--transform %s " % shlex.quote(transform) if transform else ""
    return ("tar --format=gnu --numeric-owner --sort=name -C %s %s-cf - %s | gzip -6 -n > %s"
            % (shlex.quote(cdir), t, " ".join(shlex.quote(m) for m in members), shlex.quote(out)))


def rust_sysroot():
    try:
        r = subprocess.run(["rustc", "--print", "sysroot"], cwd="/", stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        p = r.stdout.strip()
        if r.returncode == 0 and os.path.isdir(os.path.join(p, "lib")):
            return p
    except OSError:
        pass
    return None


def prepare(work, mirror, plain):
    rel_a = debootstrap(work, "release-a", mirror, None)
    rel_b = debootstrap(work, "release-b", mirror, RELEASE_B_EXTRA)
    ldir = os.path.join(work, "layers")
    os.makedirs(ldir, exist_ok=True)
    mpath = os.path.join(ldir, "manifest.json")
    manifest = {}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)

    specs = []  # (name, cdir, members, transform, description)
    specs.append(("l1-base", rel_a, ["."], None,
                  "debootstrap --variant=minbase %s, apt cleaned (release A)" % SUITE))
    sysroot = rust_sysroot()
    if "l2-rust" not in manifest:
        if not sysroot:
            die("layer 2 needs a Rust toolchain (rustc --print sysroot)")
    specs.append(("l2-rust", sysroot or "/", ["bin", "lib"], "s,^,opt/rust/,rhS",
                  "Rust toolchain %s/{bin,lib} as /opt/rust" % sysroot))
    if "l3-usrlib" in manifest:
        l3 = manifest["l3-usrlib"]["members"]
    else:
        l3, size = [], 0
        for c in LAYER3_CANDIDATES:
            n = du_bytes(["/" + c]) if os.path.isdir("/" + c) else 0
            if n and size + n <= LAYER3_MAX:
                l3.append(c)
                size += n
        if not l3:
            die("layer 3: none of %s exists on this machine" % ", ".join(LAYER3_CANDIDATES))
    specs.append(("l3-usrlib", "/", l3, None, "this machine's /" + ", /".join(l3)))
    specs.append(("release-b", rel_b, ["."], None,
                  "debootstrap --variant=minbase --include=%s %s, apt cleaned (release B)"
                  % (RELEASE_B_EXTRA, SUITE)))

    for name, cdir, members, transform, desc in specs:
        tgz = os.path.join(ldir, name + ".tar.gz")
        tar = os.path.join(ldir, name + ".tar")
        m = manifest.get(name)
        if not (m and os.path.isfile(tgz) and os.path.getsize(tgz) == m["tgz_bytes"]):
            log("input: writing %s from %s" % (tgz, desc))
            t0 = time.time()
            if sh(tar_cmd(cdir, members, tgz + ".tmp", transform)).returncode != 0:
                die("creating %s failed" % tgz)
            os.rename(tgz + ".tmp", tgz)
            m = {"desc": desc, "members": members, "tgz_bytes": os.path.getsize(tgz)}
            r = sh("gzip -dc %s | wc -c" % shlex.quote(tgz), stdout=subprocess.PIPE, text=True)
            m["tar_bytes"] = int(r.stdout.strip())
            r = sh("tar -tvzf %s | awk '{n++; if (substr($1,1,1)==\"-\") f++} END {print n, f}'"
                   % shlex.quote(tgz), stdout=subprocess.PIPE, text=True)
            m["entries"], m["files"] = (int(x) for x in r.stdout.split())
            manifest[name] = m
            with open(mpath, "w") as f:
                json.dump(manifest, f, indent=2)
            log("input: %s: %.1f MiB tar.gz, %.1f MiB tar, %d entries (%.0f s)"
                % (name, m["tgz_bytes"] / MIB, m["tar_bytes"] / MIB, m["entries"], time.time() - t0))
        if plain and not (os.path.isfile(tar) and os.path.getsize(tar) == m["tar_bytes"]):
            log("input: writing %s (gzip -dc)" % tar)
            if sh("gzip -dc %s > %s" % (shlex.quote(tgz), shlex.quote(tar + ".tmp"))).returncode:
                die("gunzip of %s failed" % tgz)
            os.rename(tar + ".tmp", tar)

    if "releases" not in manifest:
        log("input: comparing the two releases (sha256 of every regular file)")
        manifest["releases"] = compare_releases(rel_a, rel_b)
        with open(mpath, "w") as f:
            json.dump(manifest, f, indent=2)
    return manifest, ldir


def file_hashes(root):
    """{relative path: (sha256, size)} of the regular files of a tree."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for b in iter(lambda: fh.read(1 << 20), b""):
                    h.update(b)
            out[os.path.relpath(p, root)] = (h.hexdigest(), os.path.getsize(p))
    return out


def compare_releases(a, b):
    ha, hb = file_hashes(a), file_hashes(b)
    contents_a = {h for h, _ in ha.values()}
    new_files = [(p, s) for p, (h, s) in hb.items() if h not in contents_a]
    pa, pb = dpkg_packages(a), dpkg_packages(b)
    return {
        "a_files": len(ha), "a_bytes": sum(s for _, s in ha.values()),
        "b_files": len(hb), "b_bytes": sum(s for _, s in hb.values()),
        "b_new_content_files": len(new_files),
        "b_new_content_bytes": sum(s for _, s in new_files),
        "a_packages": len(pa), "b_packages": len(pb),
        "packages_only_in_b": sorted(set(pb) - set(pa)),
        "packages_only_in_a": sorted(set(pa) - set(pb)),
        "packages_other_version": sorted(p for p in set(pa) & set(pb) if pa[p] != pb[p]),
    }


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

class Timer:
    def __init__(self, work, cold):
        self.logpath = os.path.join(work, "layers-commands.log")
        open(self.logpath, "w").close()
        self.tdir = os.path.join(work, "out")
        self.cold = cold

    def drop_caches(self):
        subprocess.run(["sync"])
        if self.cold:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def run(self, cmd):
        """Cold caches, run cmd under /usr/bin/time, then time a `sync`."""
        self.drop_caches()
        r = common.measure_once(cmd, self.tdir, self.logpath)
        t0 = time.time()
        subprocess.run(["sync"])
        r["sync"] = time.time() - t0
        if not r.get("ok"):
            raise RuntimeError("%s: %s" % (" ".join(cmd), r.get("error")))
        return r


def blob_files(d):
    return {f: os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
            if not f.startswith(".")} if os.path.isdir(d) else {}


def run_row(row, layers, ldir, out, nydus, timer):
    """One round of one row: every layer in order. Returns per-layer results."""
    kind, comp = row["kind"], row.get("compressor")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    res = []
    if kind in ("tar-xzf", "tar-xf"):
        root = os.path.join(out, "rootfs")
        os.makedirs(root)
        for name in layers:
            if kind == "tar-xzf":
                cmd = ["tar", "-xzf", os.path.join(ldir, name + ".tar.gz"), "-C", root]
            else:
                cmd = ["tar", "-xf", os.path.join(ldir, name + ".tar"), "-C", root]
            res.append(timer.run(cmd))
        res[-1]["out_bytes"] = du_bytes([root])
        return res
    blobs = os.path.join(out, "blobs")
    os.makedirs(blobs)
    parent = None
    for i, name in enumerate(layers):
        src = os.path.join(ldir, name + (".tar.gz" if kind == "targz-rafs" else ".tar"))
        boot = os.path.join(out, "boot%d" % (i + 1))
        cmd = [nydus, "create", "--type", kind, src, "-B", boot, "-D", blobs,
               "--compressor", comp, "-J", boot + ".json"]
        if parent:
            cmd += ["--parent-bootstrap", parent]
        r = timer.run(cmd)
        with open(boot + ".json") as f:
            rep = json.load(f)
        r["blob_bytes"] = sum(os.path.getsize(p) for p in rep["blob_paths"])
        r["boot_bytes"] = os.path.getsize(boot)
        r["chunks"], r["dedup_chunks"] = rep["chunks"], rep["dedup_chunks"]
        res.append(r)
        parent = boot
    res[-1]["out_bytes"] = sum(blob_files(blobs).values()) + os.path.getsize(parent)
    res[-1]["final_bootstrap"] = parent
    return res


def check_image(nydus, boot, blobs, logpath):
    with open(logpath, "ab") as lf:
        cmd = [nydus, "check", boot, "-D", blobs]
        lf.write(("$ %s\n" % " ".join(cmd)).encode())
        lf.flush()
        r = subprocess.run(cmd, stdout=lf, stderr=lf)
    return r.returncode == 0


def releases(ldir, work, nydus, timer, comp):
    """Release B with and without release A as chunk dictionary."""
    base = os.path.join(work, "out", "releases-" + comp)
    shutil.rmtree(base, ignore_errors=True)
    out = {}
    for key, src, dictb in [("a", "l1-base", None), ("b", "release-b", None),
                            ("b+dict", "release-b", "a")]:
        d = os.path.join(base, key)
        os.makedirs(os.path.join(d, "blobs"))
        boot = os.path.join(d, "bootstrap")
        cmd = [nydus, "create", "--type", "targz-rafs", os.path.join(ldir, src + ".tar.gz"),
               "-B", boot, "-D", os.path.join(d, "blobs"), "--compressor", comp,
               "-J", os.path.join(d, "report.json")]
        if dictb:
            cmd += ["--chunk-dict", "bootstrap=" + out[dictb]["bootstrap"]]
        r = timer.run(cmd)
        with open(os.path.join(d, "report.json")) as f:
            rep = json.load(f)
        r.update(bootstrap=boot, boot_bytes=os.path.getsize(boot),
                 blob_bytes=sum(os.path.getsize(p) for p in rep["blob_paths"]),
                 blobs_in_table=len(rep["blobs"]), chunks=rep["chunks"],
                 dedup_chunks=rep["dedup_chunks"], data_bytes=rep["data_bytes"])
        if dictb:
            # Check B+dict with A's blob next to its own (as in one registry).
            for f, _ in blob_files(os.path.join(base, dictb, "blobs")).items():
                os.link(os.path.join(base, dictb, "blobs", f), os.path.join(d, "blobs", f))
        r["check_ok"] = check_image(nydus, boot, os.path.join(d, "blobs"), timer.logpath)
        out[key] = r
    return out


# --------------------------------------------------------------------------

ROWS = [
    {"name": "tar -xzf", "kind": "tar-xzf"},
    {"name": "nydus targz zstd", "kind": "targz-rafs", "compressor": "zstd", "vs": "tar -xzf"},
    {"name": "nydus targz lz4_block", "kind": "targz-rafs", "compressor": "lz4_block",
     "vs": "tar -xzf"},
    {"name": "tar -xf", "kind": "tar-xf", "plain": True},
    {"name": "nydus tar zstd", "kind": "tar-rafs", "compressor": "zstd", "vs": "tar -xf",
     "plain": True},
    {"name": "nydus tar lz4_block", "kind": "tar-rafs", "compressor": "lz4_block",
     "vs": "tar -xf", "plain": True},
]


def wait_for_load(max_load, budget):
    """Poll until the 1-min load is <= max_load, for at most budget[0] s (the
    budget is shared by all rounds and decremented)."""
    l = common.loadavg()
    if l is None or l[0] <= max_load or budget[0] <= 0:
        return
    log("  load %.2f > %.2f: waiting (at most %.0f s more in this run) ..."
        % (l[0], max_load, budget[0]))
    t0 = time.time()
    while l[0] > max_load and time.time() - t0 < budget[0]:
        time.sleep(5)
        l = common.loadavg()
    budget[0] -= time.time() - t0
    log("  ... waited %.0f s, load now %.2f%s" % (time.time() - t0, l[0],
                                                   "" if l[0] <= max_load else " (measuring anyway)"))


def perf_profile(layers, ldir, work, nydus, logpath):
    """perf record (warm caches) of the zstd targz build of every layer; the
    top symbols of nydus-image's threads."""
    if not shutil.which("perf"):
        common.apt_install(["linux-perf"])
    if not shutil.which("perf"):
        warn("perf not found (Debian package linux-perf): no profile")
        return None
    d = os.path.join(work, "out", "perf")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "blobs"))
    cmds, parent = [], None
    for i, name in enumerate(layers):
        boot = os.path.join(d, "boot%d" % (i + 1))
        c = [nydus, "create", "--type", "targz-rafs", os.path.join(ldir, name + ".tar.gz"),
             "-B", boot, "-D", os.path.join(d, "blobs")]
        if parent:
            c += ["--parent-bootstrap", parent]
        cmds.append(" ".join(shlex.quote(x) for x in c))
        parent = boot
    data = os.path.join(d, "perf.data")
    with open(logpath, "ab") as lf:
        r = subprocess.run(["perf", "record", "-F", "499", "-o", data, "--", "bash", "-c",
                            " && ".join(cmds)], stdout=lf, stderr=lf)
        shutil.rmtree(os.path.join(d, "blobs"), ignore_errors=True)
        if r.returncode != 0:
            warn("perf record failed, see %s" % logpath)
            return None
        r = subprocess.run(["perf", "report", "-i", data, "--comm", "nydus-image", "--stdio",
                            "--sort", "dso,symbol", "--percent-limit", "0.01"],
                           stdout=subprocess.PIPE, stderr=lf, text=True)
    groups = [("gzip inflate (miniz_oxide, crc32fast)", ("miniz_oxide", "crc32fast")),
              ("zstd compression", ("ZSTD_", "HIST_", "HUF_", "FSE_")),
              ("lz4 compression", ("lz4_flex",)),
              ("digests (blake3 chunks, sha256 blob, crc32c)", ("blake3", "sha2::", "crc32c")),
              ("memcpy (libc)", ("memmove", "memcpy")),
              ("kernel", ("[k]",))]
    top, sums = [], {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+(\[.\])\s+(.*?)(\s+-\s+-)?\s*$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        g = next((name for name, keys in groups
                  if any(k in sym or k == kind for k in keys)), "other")
        sums[g] = sums.get(g, 0.0) + pct
        if pct >= 1.0:
            top.append("%6.2f%%  %-18s %s %s" % (pct, dso, kind, sym))
    return {"top": top, "groups": sorted(sums.items(), key=lambda kv: -kv[1])}


def median_round(rounds):
    """The round with the median total wall time."""
    tot = lambda rr: sum(x["wall"] for x in rr)
    return sorted(rounds, key=tot)[(len(rounds) - 1) // 2]


def main():
    ap = argparse.ArgumentParser(description="Issue 4: build from tar.gz layers vs tar -xzf; "
                                 "chunk-dict across two releases.")
    ap.add_argument("--work", default=DEFAULT_WORK, help="work dir (default %(default)s)")
    ap.add_argument("--nydus-image", default=os.environ.get("NYDUS_IMAGE", common.DEFAULT_BIN),
                    help="binary to test (default $NYDUS_IMAGE, else %s)" % common.DEFAULT_BIN)
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the layer rows; the round with the median total is "
                         "reported (default %(default)s)")
    ap.add_argument("--no-plain", action="store_true", help="skip tar -xf / tar-rafs rows")
    ap.add_argument("--only", help="comma-separated row names (as in the table)")
    ap.add_argument("--warm", action="store_true", help="do not drop caches before each command")
    ap.add_argument("--mirror", help="Debian mirror (default: this machine's apt source)")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="before each round, wait until the 1-min load average is <= this "
                         "(default %(default)s)")
    ap.add_argument("--max-wait", type=float, default=300,
                    help="seconds of waiting for the load allowed in the whole run "
                         "(default %(default)s; then it measures anyway)")
    ap.add_argument("--perf", action="store_true",
                    help="also profile the zstd targz build of the three layers with perf")
    ap.add_argument("--keep", action="store_true",
                    help="keep the nydus images of the last round in WORK/out/")
    ap.add_argument("--prepare-only", action="store_true", help="prepare the inputs and stop")
    args = ap.parse_args()

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    nydus = os.path.abspath(args.nydus_image)
    missing = [p for t, p in [("debootstrap", "debootstrap"), ("gzip", "gzip"), ("tar", "tar")]
               if not shutil.which(t)]
    if not os.access(common.TIME_BIN, os.X_OK):
        missing.append("time")
    common.apt_install(missing)
    if not os.access(common.TIME_BIN, os.X_OK):
        die("%s is required (Debian package 'time')" % common.TIME_BIN)
    cold = not args.warm
    if cold and os.geteuid() != 0:
        warn("not root: cannot drop caches; measuring with a warm page cache")
        cold = False

    manifest, ldir = prepare(work, args.mirror or common.apt_mirror(), not args.no_plain)
    layers = ["l1-base", "l2-rust", "l3-usrlib"]
    if args.prepare_only:
        return 0
    problem = common.nydus_usable(nydus)
    if problem:
        die(problem)
    # A private copy: a cargo build replacing the binary mid-run must not
    # change what the later rows measure.
    os.makedirs(os.path.join(work, "bin"), exist_ok=True)
    snap = os.path.join(work, "bin", "nydus-image")
    shutil.copy2(nydus, snap + ".tmp")
    os.rename(snap + ".tmp", snap)
    with open(snap, "rb") as f:
        nydus_sha = hashlib.sha256(f.read()).hexdigest()
    log("binary: %s (mtime %s, sha256 %s), run from a copy in %s"
        % (nydus, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(nydus))),
           nydus_sha[:16], snap))
    nydus = snap

    machine = common.machine_info()
    log("")
    log("machine: nproc %s, memory %s MiB, %s, %s, kernel %s"
        % (machine.get("nproc"), machine.get("mem_total_mib"), machine.get("cpu"),
           machine.get("os", "?"), machine.get("kernel")))
    log("version: %s; %s; %s" % (common.first_line([nydus, "--version"]),
                                 common.first_line(["tar", "--version"]),
                                 common.first_line(["gzip", "--version"])))
    log("")
    log("layers (%s):" % ldir)
    for n in layers + ["release-b"]:
        m = manifest[n]
        log("  %-10s %8.1f MiB tar.gz %8.1f MiB tar %7d entries  %s"
            % (n, m["tgz_bytes"] / MIB, m["tar_bytes"] / MIB, m["entries"], m["desc"]))
    tgz_total = sum(manifest[n]["tgz_bytes"] for n in layers)
    tar_total = sum(manifest[n]["tar_bytes"] for n in layers)
    log("  3 layers:  %8.1f MiB tar.gz (%d bytes) %8.1f MiB tar" % (tgz_total / MIB, tgz_total,
                                                                    tar_total / MIB))
    if tgz_total < 300e6:
        warn("the three layers hold less than 300 MB of tar.gz")

    rows = [r for r in ROWS if not (args.no_plain and r.get("plain"))]
    if args.only:
        want = [w.strip() for w in args.only.split(",")]
        bad = [w for w in want if w not in [r["name"] for r in ROWS]]
        if bad:
            die("--only: unknown rows %s" % bad)
        rows = [r for r in rows if r["name"] in want]

    timer = Timer(work, cold)
    os.makedirs(timer.tdir, exist_ok=True)
    load0 = common.loadavg()
    log("")
    log("load average before measuring: %.2f %.2f %.2f" % tuple(load0))
    log("each command: %s; /usr/bin/time; then a timed 'sync' (+sync column). %d round(s), "
        "rows interleaved; commands in %s"
        % ("sync; echo 3 > /proc/sys/vm/drop_caches" if cold else "warm page cache (sync only)",
           args.repeat, timer.logpath))
    results = {r["name"]: [] for r in rows}
    loads = []
    budget = [args.max_wait]
    for rnd in range(args.repeat):
        wait_for_load(args.max_load, budget)
        loads.append(common.loadavg())
        for row in rows:
            out = os.path.join(work, "out", common.slug(row["name"]))
            rr = run_row(row, layers, ldir, out, nydus, timer)
            results[row["name"]].append(rr)
            log("  round %d %-22s %s  total %6.2f s"
                % (rnd + 1, row["name"], " ".join("%6.2f" % x["wall"] for x in rr),
                   sum(x["wall"] for x in rr)))
            if row["kind"].endswith("rafs") and rnd == args.repeat - 1:
                row["check_ok"] = check_image(nydus, rr[-1]["final_bootstrap"],
                                              os.path.join(out, "blobs"), timer.logpath)
    for row in rows:  # trees and blobs of 1.2 GiB / 0.4-0.6 GiB: remove them
        if not (args.keep and row["kind"].endswith("rafs")):
            shutil.rmtree(os.path.join(work, "out", common.slug(row["name"])), ignore_errors=True)

    log("releases: A = l1-base, B = release-b; B built alone and with --chunk-dict bootstrap=A")
    rel = {c: releases(ldir, work, nydus, timer, c) for c in ("zstd", "lz4_block")}
    load1 = common.loadavg()

    # ---- report
    log("")
    log("3-layer image (%.1f MiB tar.gz, %.1f MiB tar): per-layer and total wall of the round "
        "with the median total (of %d); x = median over the rounds of total wall / the 'vs' "
        "row's total in the same round" % (tgz_total / MIB, tar_total / MIB, args.repeat))
    hdr = ("%-22s %7s %7s %7s %8s %8s %8s %8s %9s %6s %6s  %s"
           % ("row", "L1 s", "L2 s", "L3 s", "total s", "+sync s", "cpu s", "RSS MiB",
              "out MiB", "x", "x sync", "range s"))
    log(hdr)
    log("-" * len(hdr))
    summary = {}
    for row in rows:
        rr = median_round(results[row["name"]])
        tot = sum(x["wall"] for x in rr)
        tots = sorted(sum(x["wall"] for x in r) for r in results[row["name"]])
        s = {"layers_wall_s": [x["wall"] for x in rr], "total_wall_s": tot,
             "total_with_sync_s": tot + sum(x["sync"] for x in rr),
             "cpu_s": sum(x["user"] + x["sys"] for x in rr),
             "peak_rss_kib": max(x["rss_kib"] for r in results[row["name"]] for x in r),
             "out_bytes": rr[-1]["out_bytes"], "all_totals_s": tots}
        if "blob_bytes" in rr[0]:
            s["blob_bytes"] = [x["blob_bytes"] for x in rr]
            s["check_ok"] = row.get("check_ok")
        if row.get("vs") in results:
            pairs = list(zip(results[row["name"]], results[row["vs"]]))
            med = lambda v: sorted(v)[(len(v) - 1) // 2] if len(v) % 2 else \
                (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2
            s["x_rounds"] = [sum(x["wall"] for x in a) / sum(x["wall"] for x in b)
                             for a, b in pairs]
            s["x"] = med(s["x_rounds"])
            s["x_sync"] = med([sum(x["wall"] + x["sync"] for x in a)
                               / sum(x["wall"] + x["sync"] for x in b) for a, b in pairs])
        else:
            s["x"] = s["x_sync"] = None
        summary[row["name"]] = s
        log("%-22s %s %8.2f %8.2f %8.2f %8.1f %9.1f %6s %6s  %.2f-%.2f%s"
            % (row["name"], " ".join("%7.2f" % w for w in s["layers_wall_s"]), tot,
               s["total_with_sync_s"], s["cpu_s"], s["peak_rss_kib"] / 1024.0,
               s["out_bytes"] / MIB, common.fmt(s["x"], ".2f"), common.fmt(s["x_sync"], ".2f"),
               tots[0], tots[-1],
               "" if s.get("check_ok") in (None, True) else "  CHECK FAILED"))
    log("(out MiB: extracted file bytes for tar; blobs + final bootstrap for nydus. "
        "+sync: wall plus a 'sync' right after each command, i.e. with its writeback. "
        "range: min-max total over the rounds)")
    for row in rows:
        s = summary[row["name"]]
        if s.get("x_rounds"):
            log("  %-22s x per round: %s" % (row["name"], " ".join("%.2f" % x for x in s["x_rounds"])))

    rc = manifest["releases"]
    log("")
    log("releases: A %d packages, B %d (+%d: %s); B has %d files / %.1f MiB, of which %d files / "
        "%.1f MiB have content not in A"
        % (rc["a_packages"], rc["b_packages"], len(rc["packages_only_in_b"]),
           " ".join(rc["packages_only_in_b"]), rc["b_files"], rc["b_bytes"] / MIB,
           rc["b_new_content_files"], rc["b_new_content_bytes"] / MIB))
    hdr = "%-10s %-12s %10s %10s %8s %8s %7s %6s" % ("compressor", "build", "blob MiB", "boot KiB",
                                                     "chunks", "deduped", "wall s", "check")
    log(hdr)
    log("-" * len(hdr))
    for c, rs in rel.items():
        for key, label in [("a", "A"), ("b", "B alone"), ("b+dict", "B + dict A")]:
            r = rs[key]
            log("%-10s %-12s %10.2f %10.1f %8d %8d %7.2f %6s"
                % (c, label, r["blob_bytes"] / MIB, r["boot_bytes"] / 1024.0, r["chunks"],
                   r["dedup_chunks"], r["wall"], "ok" if r["check_ok"] else "FAIL"))
        rs["ratio"] = rs["b+dict"]["blob_bytes"] / rs["b"]["blob_bytes"]
        log("%-10s B + dict A / B alone: blob bytes x %.3f (%.2f MiB saved)"
            % (c, rs["ratio"], (rs["b"]["blob_bytes"] - rs["b+dict"]["blob_bytes"]) / MIB))

    log("")
    main_row = summary.get("nydus targz zstd")
    verdict = None
    if main_row and main_row["x"] is not None:
        verdict = "PASS" if main_row["x"] <= TARGET_RATIO else "FAIL"
        log("%s  targz-rafs (zstd) build <= %.1fx tar -xzf: %.2fx" % (verdict, TARGET_RATIO,
                                                                     main_row["x"]))
    lz = summary.get("nydus targz lz4_block")
    if lz and lz["x"] is not None:
        log("%s  targz-rafs (lz4_block) build <= %.1fx tar -xzf: %.2fx"
            % ("PASS" if lz["x"] <= TARGET_RATIO else "FAIL", TARGET_RATIO, lz["x"]))
    log("load average: before %s, before each round %s, at the end %s"
        % (" ".join("%.2f" % x for x in load0),
           "; ".join(" ".join("%.2f" % x for x in l) for l in loads),
           " ".join("%.2f" % x for x in load1)))

    prof = perf_profile(layers, ldir, work, nydus, timer.logpath) if args.perf else None
    if prof:
        log("")
        log("perf profile of the zstd targz build of the 3 layers (warm caches, all threads; "
            "share of nydus-image's samples):")
        for g, pct in prof["groups"]:
            log("  %6.2f%%  %s" % (pct, g))
        log("symbols >= 1 %:")
        for l in prof["top"]:
            log("  " + l)
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
           "loadavg": {"before": load0, "rounds": loads, "end": load1},
           "inputs": manifest, "nydus_image": nydus, "repeat": args.repeat, "cold": cold,
           "rows": summary, "rounds": results, "releases": rel,
           "target": {"limit": TARGET_RATIO, "result": verdict}, "perf": prof}
    rpath = os.path.join(work, "layers-results.json")
    with open(rpath, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    log("results written to %s" % rpath)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
