#!/usr/bin/env python3
"""Benchmark runner: nydus-image vs tar and mkfs.erofs on a realistic tree.

Builds (once, cached in the work dir) a Debian bookworm minbase tree with
debootstrap plus a deterministic 1 GiB random file, then measures, in one
run, wall time, CPU time (user+sys), peak RSS and output size of

    nydus-image create --compressor none | lz4_block | zstd
    tar -czf, tar --zstd, mkfs.erofs (uncompressed), mkfs.erofs -zlz4

and prints a table with ratios plus PASS/FAIL lines for the targets.
Results are also written to WORK/results.json.

Python 3 standard library only.  See bench/README.md.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK = "/var/tmp/nydus-bench"
DEFAULT_BIN = os.path.join(REPO, "target", "release", "nydus-image")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
TIME_BIN = "/usr/bin/time"

RANDOM_SIZE = 1 << 30
RANDOM_NAME = "bench-random-1g.bin"  # name of the file inside the tree
# Fixed key/iv: AES-128-CTR over zeros is a deterministic, incompressible stream.
RANDOM_KEY = "000102030405060708090a0b0c0d0e0f"
RANDOM_IV = "00000000000000000000000000000000"

MIB = 1024 * 1024

# Targets: (label, run, metric, baseline or None, limit)
#   metric "wall"/"size": ratio run/baseline <= limit
#   metric "rss": peak RSS of run in MiB <= limit
TARGETS = [
    ("zstd wall <= 1.0x tar --zstd", "nydus zstd", "wall", "tar --zstd", 1.0),
    ("zstd data <= 1.05x tar --zstd", "nydus zstd", "size", "tar --zstd", 1.05),
    ("lz4_block wall <= 1.0x mkfs.erofs -zlz4", "nydus lz4_block", "wall",
     "mkfs.erofs -zlz4", 1.0),
    ("none wall <= 1.2x mkfs.erofs", "nydus none", "wall", "mkfs.erofs", 1.2),
    ("none peak RSS <= 48 MiB", "nydus none", "rss", None, 48.0),
    ("lz4_block peak RSS <= 48 MiB", "nydus lz4_block", "rss", None, 48.0),
    ("zstd peak RSS <= 48 MiB", "nydus zstd", "rss", None, 48.0),
]

# Baseline each nydus row is compared with in the table.
BASELINE_OF = {
    "nydus none": "mkfs.erofs",
    "nydus lz4_block": "mkfs.erofs -zlz4",
    "nydus zstd": "tar --zstd",
}


def log(msg):
    print(msg, flush=True)


def warn(msg):
    print("warning: " + msg, file=sys.stderr, flush=True)


def die(msg, code=2):
    print("error: " + msg, file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------------------------
# Setup: packages, tree, random file
# --------------------------------------------------------------------------

_apt_updated = False


def apt_install(pkgs):
    """apt-get install the given Debian packages (root only). Returns bool."""
    global _apt_updated
    if not pkgs:
        return True
    if os.geteuid() != 0:
        warn("not root; cannot apt-get install %s" % " ".join(pkgs))
        return False
    if not shutil.which("apt-get"):
        warn("apt-get not found; install %s by hand" % " ".join(pkgs))
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing missing packages: %s" % " ".join(pkgs))
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-q"], env=env,
                       stdout=subprocess.DEVNULL)
        _apt_updated = True
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + pkgs,
                       env=env, stdout=subprocess.DEVNULL)
    return r.returncode == 0


def ensure_tools(need_debootstrap, need_openssl):
    # tool -> Debian package
    wanted = [("tar", "tar"), ("gzip", "gzip"), ("zstd", "zstd"),
              ("mkfs.erofs", "erofs-utils")]
    if need_debootstrap:
        wanted.append(("debootstrap", "debootstrap"))
    if need_openssl:
        wanted.append(("openssl", "openssl"))
    missing = sorted({pkg for tool, pkg in wanted if not shutil.which(tool)})
    if not os.access(TIME_BIN, os.X_OK):
        missing.append("time")
    if missing:
        apt_install(missing)
    if not os.access(TIME_BIN, os.X_OK):
        die("%s is required (Debian package 'time')" % TIME_BIN)


def apt_mirror():
    """The Debian mirror this machine's apt uses (main archive, not security)."""
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    for p in paths:
        try:
            with open(p) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if line.startswith("#"):
                continue
            urls = []
            if line.startswith("URIs:"):
                urls = line.split()[1:]
            elif line.startswith("deb "):
                urls = [w for w in line.split()[1:] if "://" in w]
            for u in urls:
                u = u.rstrip("/")
                if u.endswith("/debian") and "security" not in u:
                    return u
    return DEFAULT_MIRROR


def ensure_rootfs(work, mirror):
    rootfs = os.path.join(work, "rootfs")
    if os.path.isdir(rootfs):
        log("tree: using cached debootstrap tree %s" % rootfs)
        return rootfs
    if os.geteuid() != 0:
        die("debootstrap needs root (or pass --tree DIR)")
    tmp = rootfs + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    logf = os.path.join(work, "debootstrap.log")
    log("tree: debootstrap --variant=minbase %s %s (%s); log: %s"
        % (SUITE, rootfs, mirror, logf))
    t0 = time.time()
    with open(logf, "w") as f:
        r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, tmp, mirror],
                           stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        die("debootstrap failed (rc=%d), see %s" % (r.returncode, logf))
    os.rename(tmp, rootfs)
    log("tree: debootstrap done in %.0f s" % (time.time() - t0))
    return rootfs


def random_file(work, tree, wanted):
    """Put the deterministic 1 GiB incompressible file into the tree, or park it.

    The file is generated once (AES-128-CTR with a fixed key over zeros, so every
    machine gets the same bytes) and then moved, never copied: it lives either in
    TREE/RANDOM_NAME or, with --no-random-file, parked in WORK, so the tree never
    holds a hard link to something outside it.
    """
    intree = os.path.join(tree, RANDOM_NAME)
    parked = os.path.join(work, "random-1g.aes128ctr.bin")
    ok = lambda p: os.path.isfile(p) and os.path.getsize(p) == RANDOM_SIZE
    if not wanted:
        if ok(intree):
            os.rename(intree, parked)
        elif os.path.lexists(intree):
            os.unlink(intree)
        return
    if ok(intree):
        return
    if ok(parked):
        os.rename(parked, intree)
        return
    tmp = os.path.join(work, "random-1g.tmp")
    log("random file: generating %s (openssl enc -aes-128-ctr, fixed key)" % intree)
    t0 = time.time()
    cmd = ("set -o pipefail; head -c %d /dev/zero | openssl enc -aes-128-ctr "
           "-K %s -iv %s -nosalt > %s" % (RANDOM_SIZE, RANDOM_KEY, RANDOM_IV, shlex.quote(tmp)))
    r = subprocess.run(["bash", "-c", cmd])
    if r.returncode != 0 or not ok(tmp):
        die("generating the random file failed (is openssl installed?)")
    os.rename(tmp, intree)
    log("random file: done in %.1f s" % (time.time() - t0))


# --------------------------------------------------------------------------
# Facts: machine, tree, versions
# --------------------------------------------------------------------------

def machine_info():
    info = {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "kernel": platform.release(), "cpu": platform.machine()}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_mib"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def tree_stats(root):
    s = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "other": 0,
         "file_bytes": 0, "unique_file_bytes": 0, "hardlinked_files": 0}
    seen = set()

    def visit(path):
        st = os.lstat(path)
        s["entries"] += 1
        m = st.st_mode
        if stat.S_ISREG(m):
            s["files"] += 1
            s["file_bytes"] += st.st_size
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                s["hardlinked_files"] += 1  # extra names of an inode already counted
            if key not in seen:
                seen.add(key)
                s["unique_file_bytes"] += st.st_size
        elif stat.S_ISDIR(m):
            s["dirs"] += 1
        elif stat.S_ISLNK(m):
            s["symlinks"] += 1
        else:
            s["other"] += 1
        return stat.S_ISDIR(m)

    stack = [root]
    visit(root)
    while stack:
        d = stack.pop()
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if visit(p):
                stack.append(p)
    return s


def first_line(cmd):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=30)
        out = r.stdout.decode(errors="replace").strip().splitlines()
        return out[0].strip() if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def tool_versions(nydus_bin):
    v = {"tar": first_line(["tar", "--version"]),
         "gzip": first_line(["gzip", "--version"]),
         "zstd": first_line(["zstd", "--version"]).strip("* "),
         "mkfs.erofs": dpkg_version("erofs-utils") or first_line(["mkfs.erofs", "-V"])}
    if os.path.isfile(nydus_bin):
        v["nydus-image"] = first_line([nydus_bin, "--version"])
    return v


def dpkg_version(pkg):
    out = first_line(["dpkg-query", "-W", "-f=${Version}", pkg])
    return ("%s %s" % (pkg, out)) if out else ""


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

def warm_up(tree):
    # GNU tar skips reading file data when the archive is /dev/null, so pipe it.
    t0 = time.time()
    subprocess.run(["bash", "-c", "tar -cf - -C %s . | cat > /dev/null" % shlex.quote(tree)],
                   stderr=subprocess.DEVNULL)
    return time.time() - t0


def path_size(p):
    if os.path.isfile(p):
        return os.path.getsize(p)
    total = 0
    for d, _, files in os.walk(p):
        for f in files:
            fp = os.path.join(d, f)
            if os.path.isfile(fp) and not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def measure_once(cmd, outdir, logpath):
    """Run cmd under /usr/bin/time; returns dict (ok, wall, user, sys, rss_kib, rc, err)."""
    tfile = os.path.join(outdir, ".time")
    full = [TIME_BIN, "-f", "%e %U %S %M", "-o", tfile] + cmd
    with open(logpath, "ab") as lf:
        lf.write(("$ %s\n" % " ".join(shlex.quote(c) for c in cmd)).encode())
        lf.flush()
        start = lf.tell()
        try:
            r = subprocess.run(full, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
        except OSError as e:
            return {"ok": False, "error": str(e)}
    res = {"rc": r.returncode}
    try:
        with open(tfile) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        os.unlink(tfile)
        e, u, s, m = lines[-1].split()
        res.update(wall=float(e), user=float(u), sys=float(s), rss_kib=int(m))
    except (OSError, ValueError, IndexError):
        res["ok"] = False
        res["error"] = "could not parse /usr/bin/time output"
        return res
    if r.returncode != 0:
        res["ok"] = False
        res["error"] = "exit status %d (%s)" % (r.returncode,
                                                 tail(logpath, start) or "no output")
        return res
    res["ok"] = True
    return res


def tail(path, start, n=3):
    """Last n lines that the command wrote to the log after offset start."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, os.path.getsize(path) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return " | ".join(l.strip() for l in lines[-n:])[-300:]
    except OSError:
        return ""


def nydus_usable(nydus_bin):
    if not (os.path.isfile(nydus_bin) and os.access(nydus_bin, os.X_OK)):
        return "binary not found: %s (cargo build --release)" % nydus_bin
    try:
        r = subprocess.run([nydus_bin, "create", "--help"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return "cannot run %s: %s" % (nydus_bin, e)
    if r.returncode != 0:
        return "'%s create --help' failed (rc=%d)" % (nydus_bin, r.returncode)
    return None


def jobs(tree, out, nydus_bin):
    """(name, kind, prepare(dir) -> (cmd, output path)) for every benchmarked tool."""
    def nydus(comp):
        def prep(d):
            boot = os.path.join(d, "bootstrap")
            blobs = os.path.join(d, "blobs")
            os.makedirs(blobs)
            return ([nydus_bin, "create", tree, "-B", boot, "-D", blobs,
                     "--compressor", comp], [boot, blobs])
        return prep

    def simple(fn, argv):
        def prep(d):
            p = os.path.join(d, fn)
            return ([a.replace("@OUT@", p) for a in argv], [p])
        return prep

    return [
        ("nydus none", "nydus", nydus("none")),
        ("nydus lz4_block", "nydus", nydus("lz4_block")),
        ("nydus zstd", "nydus", nydus("zstd")),
        ("tar -czf", "baseline", simple("out.tgz", ["tar", "-czf", "@OUT@", "-C", tree, "."])),
        ("tar --zstd", "baseline",
         simple("out.tzst", ["tar", "--zstd", "-cf", "@OUT@", "-C", tree, "."])),
        ("mkfs.erofs", "baseline", simple("out.img", ["mkfs.erofs", "@OUT@", tree])),
        ("mkfs.erofs -zlz4", "baseline",
         simple("out.img", ["mkfs.erofs", "-zlz4", "@OUT@", tree])),
    ]


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_job(name, prep, outroot, repeat, keep, logpath):
    d = os.path.join(outroot, slug(name))
    runs = []
    size = None
    cmd = None
    for i in range(repeat):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        cmd, outputs = prep(d)
        subprocess.run(["sync"])  # flush earlier runs' dirty pages (not timed)
        r = measure_once(cmd, d, logpath)
        if not r.get("ok"):
            return {"name": name, "ok": False, "cmd": cmd, "error": r.get("error", "failed"),
                    "runs": runs + [r]}
        missing = [p for p in outputs if not os.path.exists(p) or path_size(p) == 0]
        if missing:
            r["ok"] = False
            r["error"] = "exit status 0 but no output: %s missing or empty" % ", ".join(
                os.path.relpath(p, d) for p in missing)
            return {"name": name, "ok": False, "cmd": cmd, "error": r["error"],
                    "runs": runs + [r]}
        r["size"] = sum(path_size(p) for p in outputs)
        r["size_parts"] = {os.path.relpath(p, d): path_size(p) for p in outputs}
        size = r["size"]
        runs.append(r)
        log("  %-18s run %d/%d: wall %.2f s, cpu %.2f s, rss %.1f MiB, size %.1f MiB"
            % (name, i + 1, repeat, r["wall"], r["user"] + r["sys"],
               r["rss_kib"] / 1024.0, size / MIB))
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    # median run by wall time
    best = sorted(runs, key=lambda x: x["wall"])[(len(runs) - 1) // 2]
    return {"name": name, "ok": True, "cmd": cmd, "size_parts": runs[-1]["size_parts"],
            "wall_s": best["wall"], "user_s": best["user"], "sys_s": best["sys"],
            "cpu_s": round(best["user"] + best["sys"], 2),
            "peak_rss_kib": max(x["rss_kib"] for x in runs),
            "size_bytes": size, "runs": runs}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, spec, na="-"):
    return na if v is None else format(v, spec)


def print_table(results, tree_bytes):
    by = {r["name"]: r for r in results}
    hdr = ("%-18s %8s %8s %9s %10s %8s  %-17s %6s %6s %6s %6s"
           % ("tool", "wall s", "cpu s", "RSS MiB", "size MiB", "size/in",
              "vs", "wall x", "cpu x", "rss x", "size x"))
    log(hdr)
    log("-" * len(hdr))
    for r in results:
        if not r["ok"]:
            log("%-18s FAILED: %s" % (r["name"], r.get("error", "")))
            continue
        base = by.get(BASELINE_OF.get(r["name"], ""))
        bok = base is not None and base["ok"]
        g = (lambda k: ratio(r[k], base[k])) if bok else (lambda k: None)
        r["vs"] = BASELINE_OF.get(r["name"])
        r["ratios"] = {k: g(k) for k in ("wall_s", "cpu_s", "peak_rss_kib", "size_bytes")}
        log("%-18s %8.2f %8.2f %9.1f %10.1f %8.3f  %-17s %6s %6s %6s %6s"
            % (r["name"], r["wall_s"], r["cpu_s"], r["peak_rss_kib"] / 1024.0,
               r["size_bytes"] / MIB, r["size_bytes"] / tree_bytes if tree_bytes else 0,
               r["vs"] or "", fmt(g("wall_s"), ".2f"), fmt(g("cpu_s"), ".2f"),
               fmt(g("peak_rss_kib"), ".2f"), fmt(g("size_bytes"), ".3f")))


def evaluate_targets(results):
    by = {r["name"]: r for r in results}
    out = []
    for label, run, metric, basename, limit in TARGETS:
        r = by.get(run)
        b = by.get(basename) if basename else None
        value = None
        why = ""
        if r is None or not r["ok"]:
            why = "%s did not run" % run if r is None else "%s failed" % run
        elif basename and (b is None or not b["ok"]):
            why = "baseline %s %s" % (basename, "did not run" if b is None else "failed")
        elif metric == "rss":
            value = r["peak_rss_kib"] / 1024.0
        elif metric == "wall":
            value = ratio(r["wall_s"], b["wall_s"])
        elif metric == "size":
            value = ratio(r["size_bytes"], b["size_bytes"])
        if value is None:
            verdict = "FAIL"
            detail = "n/a (%s)" % (why or "no data")
        else:
            verdict = "PASS" if value <= limit else "FAIL"
            detail = ("%.1f MiB (limit %.0f)" % (value, limit) if metric == "rss"
                      else "%.3fx (limit %.2fx)" % (value, limit))
        out.append({"target": label, "result": verdict, "value": value, "limit": limit,
                    "metric": metric, "run": run, "baseline": basename, "note": why})
        log("%s  %-40s %s" % (verdict, label, detail))
    return out


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="Benchmark nydus-image create against tar and mkfs.erofs.")
    ap.add_argument("--work", default=DEFAULT_WORK,
                    help="work dir: cached tree, random file, outputs, results.json "
                         "(default %(default)s)")
    ap.add_argument("--tree", help="benchmark this existing tree instead of the cached "
                    "debootstrap tree (used read-only; no random file is added)")
    ap.add_argument("--no-random-file", action="store_true",
                    help="leave the 1 GiB random file out of the tree")
    ap.add_argument("--nydus-image", default=DEFAULT_BIN,
                    help="nydus-image binary (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per tool; the median wall-time run is reported "
                         "(default %(default)s)")
    ap.add_argument("--only", help="comma-separated tool names to run, e.g. "
                    "'nydus zstd,tar --zstd' (targets needing others then FAIL)")
    ap.add_argument("--mirror", help="Debian mirror for debootstrap (default: the apt "
                    "source of this machine, else %s)" % DEFAULT_MIRROR)
    ap.add_argument("--keep-outputs", action="store_true",
                    help="keep the built images in WORK/out")
    args = ap.parse_args()
    if args.repeat < 1:
        die("--repeat must be >= 1")

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    nydus_bin = os.path.abspath(args.nydus_image)

    use_random = not args.no_random_file and not args.tree
    ensure_tools(need_debootstrap=not args.tree, need_openssl=use_random)

    if args.tree:
        tree = os.path.abspath(args.tree)
        if not os.path.isdir(tree):
            die("--tree %s is not a directory" % tree)
        if not args.no_random_file:
            log("note: --tree given; the tree is used as is, no random file is added")
    else:
        tree = ensure_rootfs(work, args.mirror or apt_mirror())
        random_file(work, tree, use_random)

    machine = machine_info()
    log("")
    log("machine: nproc %s, memory %s MiB, %s, %s, kernel %s"
        % (machine.get("nproc"), machine.get("mem_total_mib"), machine.get("cpu"),
           machine.get("os", "?"), machine.get("kernel")))
    stats = tree_stats(tree)
    log("tree:    %s: %d entries (%d files, %d dirs, %d symlinks, %d other), "
        "%.1f MiB in regular files (%d bytes)%s"
        % (tree, stats["entries"], stats["files"], stats["dirs"], stats["symlinks"],
           stats["other"], stats["file_bytes"] / MIB, stats["file_bytes"],
           ", incl. 1 GiB random file" if use_random else ""))
    versions = tool_versions(nydus_bin)
    for k, v in versions.items():
        log("version: %-11s %s" % (k, v))

    outroot = os.path.join(work, "out")
    shutil.rmtree(outroot, ignore_errors=True)
    os.makedirs(outroot)
    logpath = os.path.join(work, "commands.log")
    open(logpath, "w").close()

    all_jobs = jobs(tree, outroot, nydus_bin)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        names = [j[0] for j in all_jobs]
        for w in wanted:
            if w not in names:
                die("--only: unknown tool %r (known: %s)" % (w, ", ".join(names)))
        all_jobs = [j for j in all_jobs if j[0] in wanted]

    nydus_problem = None
    if any(kind == "nydus" for _, kind, _ in all_jobs):
        nydus_problem = nydus_usable(nydus_bin)
        if nydus_problem:
            warn(nydus_problem)

    log("")
    load0 = loadavg()
    if load0:
        log("load average before measuring: %.2f %.2f %.2f" % tuple(load0))
        if load0[0] > 0.5:
            warn("the machine is busy (1-min load %.2f); wall times will be inflated and "
                 "noisy. Rerun when it is idle for figures to compare." % load0[0])
    wt = warm_up(tree)
    log("page cache: warm. One untimed read of the whole tree (tar -cf - | cat) took "
        "%.1f s before measuring; caches are not dropped between runs, outputs go to "
        "the page cache (no fsync), and 'sync' runs untimed before each run." % wt)
    log("measuring with %s -f '%%e %%U %%S %%M'; %d run(s) per tool; cpu = user+sys incl. "
        "child processes (gzip/zstd under tar); peak RSS = largest single process."
        % (TIME_BIN, args.repeat))
    log("command output: %s" % logpath)
    log("")

    results = []
    for name, kind, prep in all_jobs:
        if kind == "nydus" and nydus_problem:
            results.append({"name": name, "ok": False, "error": nydus_problem})
            log("  %-18s skipped: %s" % (name, nydus_problem))
            continue
        try:
            res = run_job(name, prep, outroot, args.repeat, args.keep_outputs, logpath)
        except Exception as e:  # keep going whatever happens to one tool
            res = {"name": name, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        if not res["ok"]:
            log("  %-18s FAILED: %s" % (name, res.get("error")))
        results.append(res)

    log("")
    log("results (size/in = output size / bytes in regular files; "
        "'x' columns = this row / the 'vs' row):")
    print_table(results, stats["file_bytes"])
    log("")
    log("targets:")
    targets = evaluate_targets(results)

    load1 = loadavg()
    if load1:
        log("")
        log("load average after measuring: %.2f %.2f %.2f" % tuple(load1))
    machine["loadavg_before"] = load0
    machine["loadavg_after"] = load1
    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
           "tree": dict(stats, path=tree, random_file=use_random), "versions": versions,
           "nydus_image": nydus_bin, "repeat": args.repeat,
           "page_cache": "warm (one untimed tar read of the tree before measuring)",
           "results": results, "targets": targets}
    rpath = os.path.join(work, "results.json")
    with open(rpath, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    log("")
    log("results written to %s" % rpath)
    fails = sum(1 for t in targets if t["result"] != "PASS")
    log("%d of %d targets passed" % (len(targets) - fails, len(targets)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
