"""Storage layer without emulators: checksums, URIs, the byte budget, file:// transfers."""

from __future__ import annotations

import os
import random
import sys
import threading
import time

import google_crc32c
import pytest

from airflow_provider_sky.storage import (
    IntegrityError,
    TransferError,
    estimate_transfer,
    parse_uri,
    store_for_uri,
    transfer,
    verify,
)
from airflow_provider_sky.storage.base import crc32c_combine, multipart_etag
from airflow_provider_sky.storage.local import FileStore
from airflow_provider_sky.storage.transfer import ByteBudget, is_transient


def _bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_storage_does_not_import_airflow():
    import subprocess

    code = "import sys, airflow_provider_sky.storage as s; s.transfer; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("split", [0, 1, 7, 4096, 100_000, 250_000])
def test_crc32c_combine_matches_whole(split):
    data = _bytes(250_000, split)
    a, b = data[:split], data[split:]
    combined = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
    assert combined == google_crc32c.value(data)


def test_crc32c_combine_chains_parts_through_the_cached_operator():
    """Whole-object CRC32C from equal parts and a short tail, the way a multipart copy combines
    them; the same lengths recur, so the cached zero-append operator is reused and must stay right."""
    import random

    rng = random.Random(5)
    for part, tail in ((65_536, 1), (65_536, 65_535), (1_000_003, 17)):
        data = rng.randbytes(3 * part + tail)
        pieces = [data[i : i + part] for i in range(0, len(data), part)]
        crc = google_crc32c.value(pieces[0])
        for piece in pieces[1:]:
            crc = crc32c_combine(crc, google_crc32c.value(piece), len(piece))
        assert crc == google_crc32c.value(data), (part, tail)


def test_multipart_etag_format():
    import hashlib

    parts = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    assert multipart_etag(parts) == hashlib.md5(parts[0] + parts[1]).hexdigest() + "-2"


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "key", "account"),
    [
        ("s3://bkt/a/b/", "s3", "bkt", "a/b/", None),
        ("gs://bkt", "gs", "bkt", "", None),
        ("gcs://bkt/x", "gs", "bkt", "x", None),
        ("az://acct/cont/p/q", "az", "cont", "p/q", "acct"),
        ("https://acct.blob.core.windows.net/cont/p/", "az", "cont", "p/", "acct"),
        ("file:///tmp/x/", "file", "", "tmp/x/", None),
        ("/tmp/y", "file", "", "tmp/y", None),
    ],
)
def test_parse_uri(uri, scheme, bucket, key, account):
    loc = parse_uri(uri)
    assert (loc.scheme, loc.bucket, loc.key, loc.account) == (scheme, bucket, key, account)


@pytest.mark.parametrize("bad", ["ftp://x/y", "s3:///nokey", "az://acct", "https://example.com/c/k"])
def test_parse_uri_rejects(bad):
    with pytest.raises(ValueError):
        parse_uri(bad)


def test_byte_budget_bounds_and_is_fifo():
    budget = ByteBudget(100)
    assert budget.acquire(60) == 60
    got = []

    def taker():
        got.append(budget.acquire(50))

    t = threading.Thread(target=taker)
    t.start()
    time.sleep(0.05)
    assert not got  # 60 + 50 > 100: waits
    budget.release(60)
    t.join(2)
    assert got == [50]
    budget.release(50)
    assert budget.acquire(10_000) == 100  # oversize requests are clamped to the capacity
    assert budget.peak <= budget.capacity


def test_is_transient():
    assert is_transient(ConnectionError("reset"))
    assert not is_transient(IntegrityError("bad bytes"))

    class Forbidden(Exception):
        status_code = 403

    assert not is_transient(Forbidden())


def test_file_to_file_prefix_incremental_and_delete(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = {f"d{i % 3}/f{i}.bin": _bytes(1000 + i, i) for i in range(40)}
    files["big.bin"] = _bytes(3 << 20, 99)
    _tree(src, files)
    events = []
    report = transfer(
        f"file://{src}/",
        f"file://{dst}/out/",
        part_size=1 << 20,
        multipart_threshold=1 << 20,
        workers=4,
        progress=events.append,
        progress_interval=0.01,
    )
    assert report.files_copied == 41 and report.files_skipped == 0 and report.verified
    assert report.bytes_copied == sum(len(v) for v in files.values())
    for rel, data in files.items():
        assert (dst / "out" / rel).read_bytes() == data
    assert events and events[-1].files_done == 41 and events[-1].bytes_done == report.bytes_copied
    # no leftovers of temporary files
    assert not [p for p in (dst / "out").rglob("*") if ".sky-tmp-" in p.name]

    # rerun: all identical; change one file and add an extra at the destination
    (src / "d0" / "f0.bin").write_bytes(b"changed")
    (dst / "out" / "extra.txt").write_text("not in source")
    again = transfer(f"file://{src}/", f"file://{dst}/out/")
    assert (again.files_copied, again.files_skipped, again.files_deleted) == (1, 40, 0)
    assert (dst / "out" / "extra.txt").exists()
    pruned = transfer(f"file://{src}/", f"file://{dst}/out/", delete_extraneous=True)
    assert (pruned.files_copied, pruned.files_deleted) == (0, 1)
    assert not (dst / "out" / "extra.txt").exists()
    assert verify(f"file://{src}/", f"file://{dst}/out/", deep=True).ok


def test_single_object_copy(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    report = transfer(str(tmp_path / "a.bin"), f"file://{tmp_path}/dir/")
    assert report.files_copied == 1
    assert (tmp_path / "dir" / "a.bin").read_bytes() == b"x" * 100
    transfer(str(tmp_path / "a.bin"), f"file://{tmp_path}/renamed.bin")
    assert (tmp_path / "renamed.bin").read_bytes() == b"x" * 100


def test_estimate_and_cost(tmp_path):
    _tree(tmp_path / "src", {f"f{i}": _bytes(250_000, i) for i in range(4)})
    calls = []

    def price(src_cloud, src_region, dst_cloud, dst_region):
        calls.append((src_cloud, src_region, dst_cloud, dst_region))
        return 0.09

    est = estimate_transfer(f"file://{tmp_path}/src/", f"file://{tmp_path}/dst/", egress_price_per_gb=price)
    assert est.files == 4 and est.bytes == 1_000_000
    assert est.cost_usd == pytest.approx(0.09 * 0.001)
    assert calls == [("local", "local", "local", "local")]
    assert not (tmp_path / "dst").exists()  # dry run copied nothing
    with pytest.raises(TransferError, match="exceeds max_cost_usd"):
        transfer(
            f"file://{tmp_path}/src/", f"file://{tmp_path}/dst/", egress_price_per_gb=price, max_cost_usd=1e-6
        )
    report = transfer(
        f"file://{tmp_path}/src/", f"file://{tmp_path}/dst2/", egress_price_per_gb=lambda *a: 0.09
    )
    assert report.estimated_cost_usd == pytest.approx(0.00009)


class _LyingStore(FileStore):
    """Serves corrupted bytes for one key (as a flaky network or disk would)."""

    def __init__(self, root, bad_key):
        super().__init__(root)
        self.bad_key = bad_key

    def read(self, key, start=0, end=None):
        data = super().read(key, start, end)
        if key == self.bad_key and data:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def list(self, prefix=""):
        for info in super().list(prefix):
            info.md5, _ = self.compute_checksums(info.key)  # a store that knows its checksums
            yield info


def test_corrupted_read_is_a_failure_not_success(tmp_path):
    _tree(tmp_path / "src", {"ok.bin": _bytes(5000, 1), "bad.bin": _bytes(5000, 2)})
    src_store = _LyingStore("/", str(tmp_path / "src" / "bad.bin").lstrip("/"))
    with pytest.raises(TransferError) as err:
        transfer(f"file://{tmp_path}/src/", f"file://{tmp_path}/dst/", src_store=src_store)
    report = err.value.report
    assert report.files_failed == 1 and report.files_copied == 1 and not report.verified
    assert "bad.bin" in report.failures[0][0] and "IntegrityError" in report.failures[0][1]
    assert not (tmp_path / "dst" / "bad.bin").exists()


def test_store_for_uri_file(tmp_path):
    store = store_for_uri(f"file://{tmp_path}/")
    store.write(str(tmp_path / "k").lstrip("/"), b"abc")
    assert os.path.exists(tmp_path / "k")
    assert store.region() == "local"
