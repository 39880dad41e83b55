#!/usr/bin/env bash
# Build a RAFS v6 image from the built-in sample tree and show what was built:
# the check report, statistics, the root listing; then (as root) mount it with
# nydusd (FUSE, local-dir backend, lazy blob cache), read a file from it and
# compare the whole mounted tree with the source; and mount it with the
# kernel's EROFS driver from an exported block disk.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cargo build --release --locked -q
BIN=$PWD/target/release/nydus-image
NYDUSD=$PWD/target/release/nydusd
W=${SAMPLE_DIR:-$PWD/sample-out}
rm -rf "$W" && mkdir -p "$W/blobs"
python3 tests/e2e/fixture.py "$W/source" --small >/dev/null
echo "== nydus-image create $W/source"
"$BIN" create "$W/source" --bootstrap "$W/bootstrap" --blob-dir "$W/blobs" --output-json "$W/build.json" -l warn
cat "$W/build.json"
echo "== nydus-image check"
"$BIN" check "$W/bootstrap" --blob-dir "$W/blobs" -l warn
echo "== nydus-image stat"
"$BIN" stat -B "$W/bootstrap" -l warn
echo "== nydus-image inspect -R 'ls /'"
"$BIN" inspect "$W/bootstrap" -R "ls /" -l warn | head -40
if [ "$(id -u)" -eq 0 ] && [ -e /dev/fuse ]; then
    echo "== nydusd: mount through FUSE with the local-dir backend"
    mkdir -p "$W/fuse" "$W/cache"
    cat > "$W/nydusd.json" <<JSON
{"device": {"backend": {"type": "localfs", "config": {"dir": "$W/blobs"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$W/cache"}}},
 "mode": "direct", "digest_validate": true, "enable_xattr": true}
JSON
    "$NYDUSD" --config "$W/nydusd.json" --mountpoint "$W/fuse" --bootstrap "$W/bootstrap" --log-file "$W/nydusd.log" &
    NPID=$!
    for _ in $(seq 100); do grep -q " $W/fuse fuse.rafs " /proc/self/mountinfo && break; sleep 0.1; done
    echo "-- sha256 of /files/random_3m read through FUSE, and of the source:"
    sha256sum "$W/fuse/files/random_3m" "$W/source/files/random_3m"
    echo "-- cache after one read: $(du -sh "$W/cache" | cut -f1) of $(du -sh "$W/blobs" | cut -f1) blob data"
    python3 tests/e2e/treecmp.py "$W/source" "$W/fuse"
    kill -TERM $NPID && wait $NPID
    echo "-- nydusd exited with $? after SIGTERM; mount gone: $(grep -c " $W/fuse " /proc/self/mountinfo || true) entries left"
fi
if [ "$(id -u)" -eq 0 ] && [ -e /dev/loop-control ]; then
    echo "== kernel EROFS mount of the exported block disk"
    "$BIN" export --block -B "$W/bootstrap" -D "$W/blobs" -O "$W/disk.erofs" -l warn
    mkdir -p "$W/mnt"
    mount -t erofs -o loop,ro "$W/disk.erofs" "$W/mnt"
    trap 'umount "$W/mnt" 2>/dev/null || true' EXIT
    ls -la "$W/mnt" | head -20
    echo "== mounted tree compared with the source (metadata, xattrs, content)"
    python3 tests/e2e/treecmp.py "$W/source" "$W/mnt"
fi
