#!/usr/bin/env bash
# Install what building and testing need on a fresh Debian machine (idempotent).
set -euo pipefail
need=()
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v setfattr   >/dev/null || need+=(attr)
command -v setfacl    >/dev/null || need+=(acl)
command -v zstd       >/dev/null || need+=(zstd)
command -v losetup    >/dev/null || need+=(mount)
# registry backend e2e tests (tests/e2e/test_backend_registry.py)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd   >/dev/null || need+=(apache2-utils)
command -v openssl    >/dev/null || need+=(openssl)
# eStargz e2e tests (tests/e2e/test_estargz.py): ctr-remote converts real layers
# through a containerd the test starts itself.
command -v containerd >/dev/null || need+=(containerd)
command -v ctr-remote >/dev/null || need+=(stargz-snapshotter)
if ((${#need[@]})); then
    echo "installing: ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q pytest
# The Bearer token server of the registry tests signs JWTs with it.
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography
# The metrics exposition check (tests/e2e/test_metrics_format.py) parses with it.
python3 -c 'import prometheus_client' 2>/dev/null || python3 -m pip install -q prometheus-client
# The s3 backend tests (tests/e2e/test_backend_s3.py) run moto_server with
# signature checking on, and put objects with boto3.
python3 -c 'import moto.server, flask_cors, boto3' 2>/dev/null || python3 -m pip install -q 'moto[server]' boto3
# The API contract test (tests/e2e/test_api_contract.py) loads api/openapi.yaml and
# validates answers against its schemas.
python3 -c 'import yaml, jsonschema' 2>/dev/null || python3 -m pip install -q pyyaml jsonschema
