#!/usr/bin/env bash
# Build a RAFS v6 image from the built-in sample tree and show what was built:
# the check report, statistics, the root listing, and (as root) the image
# mounted by the kernel's EROFS driver from an exported block disk.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cargo build --release --locked -q
BIN=$PWD/target/release/nydus-image
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
