#!/usr/bin/env bash
# Build everything and run all tests: Rust unit and robustness tests, then the
# end-to-end suite (real builds, unpack round trips, kernel EROFS mounts).
# Needs root for the fixture (mknod, chown, trusted.* xattrs) and loop mounts.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
fi
cargo build --release --workspace --locked
cargo test --release --workspace --locked
python3 -m pytest tests/e2e -q -p no:cacheprovider
# The daemon's suites again with the kernel's FUSE over io_uring switched on
# (nydusd then serves requests over io_uring; the conftest restores the switch).
NYDUS_E2E_FUSE_URING=1 python3 -m pytest tests/e2e/test_nydusd_*.py tests/e2e/test_api.py -q -p no:cacheprovider
