#!/usr/bin/env bash
# Install what building and testing need on a fresh Debian machine (idempotent).
set -euo pipefail
need=()
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v setfattr   >/dev/null || need+=(attr)
command -v setfacl    >/dev/null || need+=(acl)
command -v zstd       >/dev/null || need+=(zstd)
command -v losetup    >/dev/null || need+=(mount)
if ((${#need[@]})); then
    echo "installing: ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q pytest
