"""The transfer engine between every pair of stores (file, S3, GCS, Azure) on the emulators."""

from __future__ import annotations

import random

import pytest

from airflow_provider_sky.storage import transfer, verify
from tests.emulators import get_emulator, unique_name

MiB = 1 << 20
KINDS = ["file", "s3", "gcs", "azure"]
PAIRS = [(a, b) for a in KINDS for b in KINDS if (a, b) != ("file", "file")]  # file->file: unit tests
ENGINE = {"part_size": 5 * MiB, "multipart_threshold": 6 * MiB, "workers": 8}


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """20 small files in nested dirs, an empty one, and one 12 MiB object (3 parts of 5 MiB)."""
    root = tmp_path_factory.mktemp("dataset")
    files = {f"d{i % 4}/sub{i % 2}/f{i:03d}.bin": _bytes(1 + i * 997, i) for i in range(20)}
    files["empty.bin"] = b""
    files["large/blob.bin"] = _bytes(12 * MiB + 3, 1000)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root, files


class Side:
    """One end of a transfer: a URI prefix plus the options to reach it."""

    def __init__(self, kind: str, tmp_path):
        self.kind = kind
        if kind == "file":
            self.base = f"file://{tmp_path}/{unique_name('f')}/"
            self.options: dict = {}
        else:
            emu = get_emulator(kind)
            bucket = unique_name(kind)
            emu.store(bucket)
            self.base = emu.uri(bucket)
            self.options = emu.options()

    def uri(self, key: str = "") -> str:
        return self.base + key


def _seed(side: Side, dataset) -> str:
    root, _ = dataset
    uri = side.uri("seed/")
    report = transfer(f"file://{root}/", uri, dst_options=side.options, **ENGINE)
    assert report.verified
    return uri


@pytest.mark.parametrize(("src_kind", "dst_kind"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_copy_pair(src_kind, dst_kind, dataset, tmp_path):
    _, files = dataset
    src = Side(src_kind, tmp_path)
    dst = src if src_kind == dst_kind else Side(dst_kind, tmp_path)
    src_uri = _seed(src, dataset) if src_kind != "file" else f"file://{dataset[0]}/"
    dst_uri = dst.uri("copy/")
    progress = []
    report = transfer(
        src_uri,
        dst_uri,
        src_options=src.options,
        dst_options=dst.options,
        progress=progress.append,
        progress_interval=0.05,
        **ENGINE,
    )
    total = sum(len(v) for v in files.values())
    assert report.files_copied == len(files) and report.files_failed == 0
    assert report.bytes_copied == total
    assert report.verified, report
    assert report.server_side == (src_kind == dst_kind)
    assert report.estimate is not None and report.estimate.bytes == total
    assert progress[-1].files_done == len(files) and progress[-1].bytes_done == total

    check = verify(src_uri, dst_uri, src_options=src.options, dst_options=dst.options)
    assert check.ok and check.matched == len(files), check

    # The bytes really are there (read back through the destination store).
    from airflow_provider_sky.storage import open_uri

    store, prefix = open_uri(dst_uri, **dst.options)
    assert store.read(prefix + "large/blob.bin") == files["large/blob.bin"]
    assert store.read(prefix + "d1/sub1/f001.bin") == files["d1/sub1/f001.bin"]

    again = transfer(src_uri, dst_uri, src_options=src.options, dst_options=dst.options, **ENGINE)
    assert (again.files_copied, again.files_skipped) == (0, len(files))


def test_large_object_parallel_parts_bounded_memory(tmp_path):
    """20 MiB in 1 MiB parts through a 4 MiB budget: many parts, never more than the budget held."""
    data = _bytes(20 * MiB, 7)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(data)
    for kind in ("s3", "gcs", "azure"):
        side = Side(kind, tmp_path)
        opts = {"part_size": 1 * MiB, "multipart_threshold": 1 * MiB, "memory_budget": 4 * MiB, "workers": 8}
        if kind == "s3":
            opts["part_size"] = 5 * MiB  # S3's minimum part size
            opts["memory_budget"] = 10 * MiB
        from airflow_provider_sky.storage.transfer import TransferEngine
        from airflow_provider_sky.storage.uri import open_uri

        dst_store, key = open_uri(side.uri("x/"), **side.options)
        src_store, src_key = open_uri(f"file://{src}/")
        engine = TransferEngine(src_store, src_key, dst_store, key, **opts)
        report = engine.run()
        assert report.files_copied == 1 and report.verified
        assert engine.budget.peak <= opts["memory_budget"]
        assert dst_store.read(key + "big.bin") == data
        info = dst_store.head(key + "big.bin")
        if kind == "s3":
            assert info.etag.endswith("-4")  # really uploaded in parts
        # S3 -> S3 server-side copy of an engine multipart object keeps (and verifies) its ETag
        if kind == "s3":
            copy = transfer(
                side.uri("x/"), side.uri("y/"), src_options=side.options, dst_options=side.options
            )
            assert copy.server_side and copy.verified and copy.files_copied == 1
            assert dst_store.head("y/big.bin").etag == info.etag


def test_many_small_files_s3_to_azure(tmp_path):
    src, dst = Side("s3", tmp_path), Side("azure", tmp_path)
    from airflow_provider_sky.storage import open_uri

    store, prefix = open_uri(src.uri("many/"), **src.options)
    n = 600
    for i in range(n):
        store.write(f"{prefix}{i // 100}/obj{i:04d}", _bytes(2048 + i, i))
    report = transfer(
        src.uri("many/"), dst.uri("many/"), src_options=src.options, dst_options=dst.options, workers=16
    )
    assert report.files_copied == n and report.verified
    assert verify(src.uri("many/"), dst.uri("many/"), src_options=src.options, dst_options=dst.options).ok


def test_delete_extraneous_only_when_asked(tmp_path, dataset):
    src, dst = f"file://{dataset[0]}/", Side("gcs", tmp_path)
    from airflow_provider_sky.storage import open_uri

    transfer(src, dst.uri("p/"), dst_options=dst.options, **ENGINE)
    store, prefix = open_uri(dst.uri("p/"), **dst.options)
    store.write(prefix + "stale.bin", b"old")
    kept = transfer(src, dst.uri("p/"), dst_options=dst.options, **ENGINE)
    assert kept.files_deleted == 0 and store.head(prefix + "stale.bin") is not None
    pruned = transfer(src, dst.uri("p/"), dst_options=dst.options, delete_extraneous=True, **ENGINE)
    assert pruned.files_deleted == 1 and store.head(prefix + "stale.bin") is None


STRIPE_PAIRS = [("s3", "gcs"), ("s3", "azure"), ("gcs", "azure"), ("azure", "gcs"), ("gcs", "s3")]


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize(("src_kind", "dst_kind"), STRIPE_PAIRS, ids=[f"{a}-to-{b}" for a, b in STRIPE_PAIRS])
def test_large_object_streamed_stripes(src_kind, dst_kind, streams, tmp_path):
    """A large object read as 1 stripe (one streamed GET; on GCS one resumable upload straight to
    the target) or 2 stripes (on GCS: scratch objects composed): verified, bytes equal, no GCS
    scratch objects left behind, bounded memory."""
    from airflow_provider_sky.storage import open_uri
    from airflow_provider_sky.storage.base import SCRATCH_PREFIX
    from airflow_provider_sky.storage.transfer import TransferEngine

    data = _bytes(16 * MiB + 5, 11)
    src, dst = Side(src_kind, tmp_path), Side(dst_kind, tmp_path)
    src_store, src_prefix = open_uri(src.uri("big/"), **src.options)
    src_store.write(src_prefix + "obj.bin", data)
    dst_store, dst_prefix = open_uri(dst.uri("out/"), **dst.options)
    opts = {"part_size": 5 * MiB, "multipart_threshold": 6 * MiB, "memory_budget": 10 * MiB, "workers": 4}
    engine = TransferEngine(src_store, src_prefix, dst_store, dst_prefix, streams=streams, **opts)
    report = engine.run()
    assert report.files_copied == 1 and report.verified, report
    assert engine.budget.peak <= opts["memory_budget"]
    assert dst_store.read(dst_prefix + "obj.bin") == data
    check = verify(
        src.uri("big/"), dst.uri("out/"), src_options=src.options, dst_options=dst.options, deep=True
    )
    assert check.ok and check.matched == 1, check
    if dst_kind == "gcs":
        left = list(dst_store.client.list_blobs(dst_store.bucket, prefix=SCRATCH_PREFIX))
        assert left == []
        if streams == 1:  # one stripe: a plain (non-composite) object, so GCS also reports its MD5
            assert dst_store.head(dst_prefix + "obj.bin").md5 is not None
    again = TransferEngine(src_store, src_prefix, dst_store, dst_prefix, streams=streams, **opts).run()
    assert (again.files_copied, again.files_skipped) == (0, 1)
