"""The s3 backend against moto's S3 server, with signature checking on.

moto_server runs on 127.0.0.1 with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: the
first three requests (create an IAM user, give it a policy, make its access
key) go unchecked, and every request after that must carry a valid AWS
SigV4 signature of that key. ``nydus-image create --backend-type s3``
uploads the blob (one PutObject for a small blob, a multipart upload for
one over 8 MiB), ``nydusd`` mounts the image over the s3 backend, and the
tree must equal the source. A wrong secret must fail with an error naming
the 403 and S3's SignatureDoesNotMatch, without the secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401
from registry import Proc, free_port, wait_port

boto3 = pytest.importorskip("boto3", reason="boto3 missing: run tools/deps.sh")

REGION = "us-east-1"
BUCKET = "nydus-blobs"


class Moto:
    """moto_server with auth enforced, and the IAM key it accepts."""

    def __init__(self, tmp):
        binary = shutil.which("moto_server")
        if binary is None:
            pytest.fail("moto_server not installed: run tools/deps.sh", pytrace=False)
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = tmp / "moto.log"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", AWS_DEFAULT_REGION=REGION)
        self.proc = Proc([binary, "-H", "127.0.0.1", "-p", str(self.port)], self.log, env=env)
        wait_port(self.port, self.proc.proc, self.log, timeout=30)
        iam = self.client("iam", "unchecked", "unchecked")
        iam.create_user(UserName="nydus")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="nydus", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="nydus")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3 = self.client("s3", self.key_id, self.secret)
        self.s3.create_bucket(Bucket=BUCKET)

    def client(self, service, key_id, secret):
        return boto3.client(service, endpoint_url=f"http://{self.endpoint}", region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def requests(self, needle: str) -> int:
        return self.log.read_text(errors="replace").count(needle)

    def stop(self):
        self.proc.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def src_big(tmp_path_factory):
    """Two 6 MiB files of random bytes: a ~12 MiB blob (a multipart upload)."""
    root = tmp_path_factory.mktemp("s3-big") / "src"
    rng = random.Random(11)
    for i in range(2):
        d = root / f"d{i}"
        d.mkdir(parents=True)
        (d / "data").write_bytes(rng.randbytes(6 << 20))
    (root / "note.txt").write_text("s3 test\n")
    return root


def s3_config(moto, prefix, secret=None, **extra) -> dict:
    cfg = {"endpoint": moto.endpoint, "scheme": "http", "region": REGION, "bucket_name": BUCKET,
           "object_prefix": prefix, "access_key_id": moto.key_id,
           "access_key_secret": moto.secret if secret is None else secret,
           "timeout": 10, "connect_timeout": 5, "retry_limit": 1}
    cfg.update(extra)
    return cfg


def nydusd_config(backend: dict, cache_dir, style: str, path):
    if style == "v1":
        return write_config(path.with_suffix(".json"), {
            "device": {"backend": {"type": "s3", "config": backend},
                       "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(cache_dir)}}},
            "mode": "direct", "enable_xattr": True})
    lines = ["version = 2", "[backend]", 'type = "s3"', "[backend.s3]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in backend.items()]
    lines += ["[cache]", 'type = "blobcache"', "[cache.filecache]",
              f"work_dir = {json.dumps(os.fspath(cache_dir))}", "[rafs]", 'mode = "direct"',
              "enable_xattr = true", ""]
    return write_config(path.with_suffix(".toml"), "\n".join(lines))


def create_upload(src, out, config: dict, expect_rc=0):
    out.mkdir(parents=True, exist_ok=True)
    return util.run_nydus(["create", src, "-B", out / "bootstrap", "-J", out / "create.json",
                           "--backend-type", "s3", "--backend-config", json.dumps(config)],
                          expect_rc=expect_rc)


@pytest.mark.parametrize("source,style", [("small", "v1"), ("big", "v2")])
def test_upload_then_mount_from_s3(moto, src_small, src_big, daemons, tmp_path, source, style):
    src = src_small.path if source == "small" else src_big
    prefix = f"{source}-{style}/"
    before_parts = moto.requests("partNumber=")
    res = create_upload(src, tmp_path / "out", s3_config(moto, prefix))
    assert "blob uploaded" in res.stderr, res.describe()
    assert moto.secret not in res.stderr and moto.secret not in res.stdout
    info = json.loads((tmp_path / "out" / "create.json").read_text())
    (blob_id,) = info["blobs"]
    size = info["blob_sizes"][0]
    head = moto.s3.head_object(Bucket=BUCKET, Key=prefix + blob_id)
    assert head["ContentLength"] == size
    parts = moto.requests("partNumber=") - before_parts
    # One PutObject up to 8 MiB, else 8 MiB parts.
    assert parts == (0 if size <= 8 << 20 else (size + (8 << 20) - 1) // (8 << 20)), (size, parts)
    if source == "big":
        assert size > 8 << 20, size
    # What nydus-image stored is the blob, byte for byte.
    body = moto.s3.get_object(Bucket=BUCKET, Key=prefix + blob_id)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == blob_id

    # Building again: the bucket has the blob, nothing is sent.
    puts = moto.requests('"PUT /')
    res = create_upload(src, tmp_path / "out2", s3_config(moto, prefix))
    assert "already has the blob" in res.stderr, res.describe()
    assert moto.requests('"PUT /') == puts

    conf = nydusd_config(s3_config(moto, prefix), tmp_path / "cache", style, tmp_path / "c")
    d = daemons.start(tmp_path / "out" / "bootstrap", tmp_path / "mnt", config=conf)
    want = treecmp.load_dir(src, content=True)
    got = treecmp.load_dir(d.mountpoint, content=True)
    diffs = treecmp.compare(want, got)
    assert not diffs, treecmp.format_diffs(diffs, want, got) + "\n" + d.describe()
    d.stop()
    d.assert_clean_log()
    assert moto.secret not in d.log_text()


def test_object_put_by_boto3_mounts(moto, src_small, daemons, tmp_path):
    """A blob put by another S3 client (boto3), read through a v1 config."""
    img = util.create(src_small.path, tmp_path / "out")
    for blob_id in img.blob_ids:
        moto.s3.upload_file(os.fspath(img.blob_dir / blob_id), BUCKET, "boto/" + blob_id)
    conf = nydusd_config(s3_config(moto, "boto/"), tmp_path / "cache", "v1", tmp_path / "c")
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    got = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(src_small.tree, got)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, got) + "\n" + d.describe()


def test_wrong_secret_is_an_authentication_error(moto, src_small, daemons, tmp_path):
    img = util.create(src_small.path, tmp_path / "out")
    blob_id = img.blob_ids[0]
    moto.s3.upload_file(os.fspath(img.blob_path()), BUCKET, "auth/" + blob_id)
    wrong = "not-the-secret-" + "x" * 24
    # Check that moto really checks: boto3 with the wrong secret is refused.
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        moto.client("s3", moto.key_id, wrong).get_object(Bucket=BUCKET, Key="auth/" + blob_id)

    conf = nydusd_config(s3_config(moto, "auth/", secret=wrong), tmp_path / "cache", "v1",
                         tmp_path / "c")
    rc, out, _ = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                      "--bootstrap", img.bootstrap], tmp_path / "mnt", timeout=30)
    assert rc != 0, out
    assert "authentication failed" in out and "403" in out and "SignatureDoesNotMatch" in out, out
    assert blob_id in out, out
    assert wrong not in out and moto.secret not in out, out

    # The upload side says the same.
    res = create_upload(src_small.path, tmp_path / "up", s3_config(moto, "auth2/", secret=wrong),
                        expect_rc=None)
    assert res.rc != 0 and "SignatureDoesNotMatch" in res.stderr, res.describe()
    assert wrong not in res.stderr


def test_missing_object_is_reported(moto, src_small, daemons, tmp_path):
    img = util.create(src_small.path, tmp_path / "out")
    conf = nydusd_config(s3_config(moto, "nowhere/"), tmp_path / "cache", "v1", tmp_path / "c")
    rc, out, _ = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                      "--bootstrap", img.bootstrap], tmp_path / "mnt", timeout=30)
    assert rc != 0 and "not found" in out and img.blob_ids[0] in out, out
