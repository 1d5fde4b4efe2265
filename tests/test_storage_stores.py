"""The Store contract, run against file:// and the S3 / GCS / Azure emulators."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from airflow_provider_sky.storage import NotFound, store_for_uri
from airflow_provider_sky.storage.base import SCRATCH_PREFIX, PartResult, crc32c_value
from airflow_provider_sky.storage.local import FileStore
from tests.emulators import get_emulator, unique_name

KINDS = ["file", "s3", "gcs", "azure"]
MiB = 1 << 20


def _bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def store(kind, tmp_path):
    if kind == "file":
        s = FileStore(str(tmp_path / "bucket"))
        s.create_bucket()
        return s
    return get_emulator(kind).store(unique_name("st"))


def test_write_head_list_read(store):
    data = _bytes(300_000, 1)
    md5 = hashlib.md5(data).digest()
    info = store.write("dir/a.bin", data, metadata={"sky_md5": md5.hex(), "Owner": "x"}, md5=md5)
    assert info.size == len(data)
    store.write("dir/sub/b.txt", b"hello")
    store.write("other.txt", b"zz")

    head = store.head("dir/a.bin")
    assert head is not None and head.size == len(data)
    assert head.metadata.get("sky_md5") == md5.hex() and head.metadata.get("owner") == "x"
    sums = head.checksums()
    if store.scheme != "file":  # cloud stores report a content checksum
        assert sums.get("md5") == md5.hex() or sums.get("crc32c") == crc32c_value(data)

    listed = {o.key: o.size for o in store.list("dir/")}
    assert listed == {"dir/a.bin": len(data), "dir/sub/b.txt": 5}
    assert {o.key for o in store.list()} == {"dir/a.bin", "dir/sub/b.txt", "other.txt"}
    assert {o.key for o in store.list("dir/s")} == {"dir/sub/b.txt"}

    assert store.read("dir/a.bin") == data
    assert store.read("dir/a.bin", 1000, 2000) == data[1000:2000]
    assert store.read("dir/a.bin", len(data) - 10) == data[-10:]
    with store.open_read("dir/a.bin") as stream:
        assert stream.read() == data
    assert store.head("missing") is None
    with pytest.raises(NotFound):
        store.read("missing")


def test_multipart_out_of_order(store):
    part = max(store.min_part_size, 1 * MiB)
    data = _bytes(2 * part + 12345, 2)
    upload = store.begin_multipart("big/obj", metadata={"k": "v"})
    spans = [(n + 1, off, data[off : off + part]) for n, off in enumerate(range(0, len(data), part))]
    results = []
    for number, offset, chunk in reversed(spans):
        md5 = hashlib.md5(chunk).digest()
        token = upload.upload_part(number, chunk, md5, offset)
        results.append(PartResult(number, len(chunk), md5, crc32c_value(chunk), token))
    info = upload.complete(results, metadata={"k": "v"})
    assert info.size == len(data)
    assert store.read("big/obj") == data
    keys = [o.key for o in store.list()]
    assert keys == ["big/obj"]
    assert not any(k.startswith(SCRATCH_PREFIX) for k in keys)


def test_write_stream_unknown_size(store):
    part = max(store.min_part_size, 1 * MiB)
    data = _bytes(2 * part + 7, 3)
    info = store.write_stream("s/obj", io.BytesIO(data), part_size=part)
    assert info.size == len(data)
    assert store.read("s/obj") == data
    small = store.write_stream("s/small", io.BytesIO(b"abc"), part_size=part)
    assert small.size == 3


def test_server_side_copy_and_delete(kind, store, tmp_path):
    data = _bytes(50_000, 4)
    store.write("src.bin", data)
    if kind == "file":
        other = FileStore(str(tmp_path / "bucket2"))
        other.create_bucket()
    else:
        other = get_emulator(kind).store(unique_name("cp"))
    assert other.can_server_copy_from(store)
    info = other.copy_from(store, "src.bin", "copied/dst.bin")
    assert info.size == len(data)
    assert other.read("copied/dst.bin") == data
    other.delete("copied/dst.bin")
    other.delete("copied/dst.bin")  # idempotent
    assert other.head("copied/dst.bin") is None


def test_bucket_create_and_region(kind, tmp_path):
    if kind == "file":
        s = FileStore(str(tmp_path / "new"))
        assert not s.bucket_exists()
        s.create_bucket()
        assert s.bucket_exists() and s.region() == "local"
        return
    emu = get_emulator(kind)
    name = unique_name("rg")
    region = {"s3": "eu-west-1", "gcs": "europe-west1", "azure": "eastus"}[kind]
    s = store_for_uri(emu.uri(name), **emu.options())
    assert not s.bucket_exists()
    s.create_bucket(region=region)
    s.create_bucket(region=region)  # exist_ok
    assert s.bucket_exists()
    # fake-gcs-server accepts but ignores a bucket's location (always US-CENTRAL1).
    assert s.region() == ("us-central1" if kind == "gcs" else region)


def test_cross_provider_server_copy_not_offered():
    s3 = get_emulator("s3").store(unique_name("x"))
    gcs = get_emulator("gcs").store(unique_name("x"))
    assert not s3.can_server_copy_from(gcs)
    assert not gcs.can_server_copy_from(s3)
