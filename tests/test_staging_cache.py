"""The content-keyed staging cache and staging buckets (file stores, the state DB, the emulators)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sky.state.staging_cache import StagingCacheRecord, StateStagingCache
from airflow_provider_sky.state.store import StateStore
from airflow_provider_sky.storage import store_for_uri
from airflow_provider_sky.storage.staging import (
    AZURE_LIFECYCLE_NOTE,
    MemoryStagingCache,
    ensure_staging_bucket,
    list_source,
    listing_digest,
    stage,
    staging_bucket_name,
)
from tests.emulators import get_emulator, unique_name

DAY = 86400.0


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _count_lists(store: Any) -> list[str]:
    """Record every `list` call on `store` (the prefixes asked for)."""
    calls: list[str] = []
    original = store.list

    def counting(prefix: str = "") -> Any:
        calls.append(prefix)
        return original(prefix)

    store.list = counting
    return calls


FILES = {f"d{i % 3}/f{i}.bin": bytes([i]) * (100 + i) for i in range(12)}


def test_cache_skips_an_unchanged_prefix_and_notices_changes(tmp_path: Path) -> None:
    _tree(tmp_path / "src", FILES)
    src, dst = f"file://{tmp_path}/src/", f"file://{tmp_path}/dst/"
    cache = MemoryStagingCache()

    first = stage(src, dst, cache=cache)
    assert not first.cache_hit and first.report.files_copied == 12 and first.report.verified
    assert first.source_files == 12 and first.source_bytes == sum(map(len, FILES.values()))

    dst_store = store_for_uri(dst)
    lists = _count_lists(dst_store)
    second = stage(src, dst, dst_store=dst_store, cache=cache)
    assert second.cache_hit and lists == []  # the destination was not even listed
    assert second.report.files_skipped == 12 and second.report.files_copied == 0
    assert second.report.verified and second.report.cost_usd == 0.0

    (tmp_path / "src" / "d1" / "f4.bin").write_bytes(b"changed content")
    third = stage(src, dst, cache=cache)
    assert not third.cache_hit and third.report.files_copied == 1 and third.report.files_skipped == 11
    assert (tmp_path / "dst" / "d1" / "f4.bin").read_bytes() == b"changed content"
    assert stage(src, dst, cache=cache).cache_hit

    (tmp_path / "src" / "d2" / "f5.bin").unlink()  # a removed object changes the digest too
    fourth = stage(src, dst, cache=cache)
    assert not fourth.cache_hit and fourth.report.files_copied == 0 and fourth.report.files_skipped == 11


def test_cache_is_per_source_and_destination(tmp_path: Path) -> None:
    _tree(tmp_path / "a", FILES)
    _tree(tmp_path / "b", FILES)
    cache = MemoryStagingCache()
    dst = f"file://{tmp_path}/dst/"
    stage(f"file://{tmp_path}/a/", dst, cache=cache)
    assert not stage(f"file://{tmp_path}/b/", dst, cache=cache).cache_hit  # same bytes, other source
    assert not stage(f"file://{tmp_path}/b/", f"file://{tmp_path}/dst2/", cache=cache).cache_hit


def test_records_expire_with_the_destination_lifecycle(tmp_path: Path) -> None:
    _tree(tmp_path / "src", FILES)
    src, dst = f"file://{tmp_path}/src/", f"file://{tmp_path}/dst/"
    cache = MemoryStagingCache()
    now = [1_000_000_000.0]
    stage(src, dst, cache=cache, expire_after_days=7, clock=lambda: now[0])
    record = cache.get(dst.rstrip("/") + "/")
    assert record is not None and record.expires_at == pytest.approx(now[0] + 6 * DAY)
    now[0] += 5 * DAY
    assert stage(src, dst, cache=cache, expire_after_days=7, clock=lambda: now[0]).cache_hit
    now[0] += 2 * DAY  # past the margin: objects may be gone, so the destination is checked again
    again = stage(src, dst, cache=cache, expire_after_days=7, clock=lambda: now[0])
    assert not again.cache_hit and again.report.files_skipped == 12


def test_digest_covers_keys_sizes_and_etags(tmp_path: Path) -> None:
    _tree(tmp_path, {"a/x": b"1", "a/y": b"22"})
    store = store_for_uri(f"file://{tmp_path}/")
    listing = list_source(store, f"{str(tmp_path).lstrip('/')}/a")
    assert not listing.single and sorted(listing.objects) == ["x", "y"]
    one = list_source(store, f"{str(tmp_path).lstrip('/')}/a/x")
    assert one.single and list(one.objects) == [""]
    d1 = listing_digest(listing)
    (tmp_path / "a" / "y").write_bytes(b"33")
    assert listing_digest(list_source(store, f"{str(tmp_path).lstrip('/')}/a/")) != d1


def test_state_cache_table_roundtrip(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.list_clusters()  # the engine (and its tables) exist before the cache is used
    cache = StateStagingCache(store)
    assert cache.get("s3://b/p/") is None
    cache.put(StagingCacheRecord("s3://b/p/", "gs://src/p/", "d1", 3, 300, 1000.0, None))
    cache.put(StagingCacheRecord("s3://b/q/", "gs://src/q/", "d2", 1, 10, 1000.0, 5000.0))
    cache.put(StagingCacheRecord("s3://b/p/", "gs://src/p/", "d3", 4, 400, 2000.0, 9000.0))  # upsert
    got = cache.get("s3://b/p/")
    assert got == StagingCacheRecord("s3://b/p/", "gs://src/p/", "d3", 4, 400, 2000.0, 9000.0)
    assert got.valid_for("gs://src/p/", "d3", 8999.0) and not got.valid_for("gs://src/p/", "d3", 9000.0)
    assert not got.valid_for("gs://src/p/", "d1", 0) and not got.valid_for("gs://other/", "d3", 0)
    assert [r.dest_uri for r in cache.entries()] == ["s3://b/p/", "s3://b/q/"]
    assert cache.forget("s3://b/q/") and not cache.forget("s3://b/q/")
    assert StateStagingCache(StateStore(store.url)).get("s3://b/p/") == got  # durable, shared


def test_s3_prefix_cached_in_the_state_db(tmp_path: Path) -> None:
    emu = get_emulator("s3")
    src_bucket, dst_bucket = unique_name("src"), unique_name("dst")
    src_store, dst_store = emu.store(src_bucket), emu.store(dst_bucket)
    for rel, data in FILES.items():
        src_store.write(f"in/{rel}", data)
    cache = StateStagingCache(StateStore(f"sqlite:///{tmp_path / 'state.db'}"))
    src, dst = emu.uri(src_bucket, "in/"), emu.uri(dst_bucket, "staged/")
    first = stage(src, dst, src_store=src_store, dst_store=dst_store, cache=cache, expire_after_days=7)
    assert first.report.files_copied == 12 and first.report.verified and not first.cache_hit
    lists = _count_lists(dst_store)
    assert stage(
        src, dst, src_store=src_store, dst_store=dst_store, cache=cache, expire_after_days=7
    ).cache_hit
    assert lists == []
    src_store.write("in/d0/f3.bin", b"new bytes")
    src_lists = _count_lists(src_store)
    third = stage(src, dst, src_store=src_store, dst_store=dst_store, cache=cache, expire_after_days=7)
    assert not third.cache_hit and third.report.files_copied == 1 and third.report.files_skipped == 11
    assert dst_store.read("staged/d0/f3.bin") == b"new bytes"
    assert src_lists == ["in/"]  # the cache's listing fed the copy: the source was listed once
    record = cache.get(dst)
    assert record is not None and record.expires_at is not None  # oldest object's age + 6 days


def test_staging_buckets_on_each_cloud() -> None:
    s3, gcs, az = get_emulator("s3"), get_emulator("gcs"), get_emulator("azure")

    name = staging_bucket_name("aws", "us-west-2", unique_name("acct"))
    store = store_for_uri(s3.uri(name), **s3.options())
    setup = ensure_staging_bucket(store, "us-west-2", lifecycle_days=5)
    assert setup.created and "5 days" in setup.lifecycle
    assert store.region() == "us-west-2"
    rules = store.client.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert rules[0]["Expiration"] == {"Days": 5} and rules[0]["Status"] == "Enabled"
    again = ensure_staging_bucket(store_for_uri(s3.uri(name), **s3.options()), "us-west-2")
    assert not again.created  # reused across runs

    name = staging_bucket_name("gcp", "europe-west4", unique_name("proj"))
    store = store_for_uri(gcs.uri(name), **gcs.options())
    setup = ensure_staging_bucket(store, "europe-west4", lifecycle_days=5)
    assert setup.created and store.bucket_exists() and "5 days" in setup.lifecycle
    assert not ensure_staging_bucket(store, "europe-west4").created

    name = staging_bucket_name("azure", "eastus", "devstoreaccount1")
    store = store_for_uri(az.uri(name), **az.options())
    if store.bucket_exists():  # the name is deterministic: another test may have made it first
        store.container.delete_container()
    setup = ensure_staging_bucket(store, "eastus")
    assert setup.created and store.bucket_exists() and setup.lifecycle == AZURE_LIFECYCLE_NOTE
    assert not ensure_staging_bucket(store, "eastus").created  # reused across runs


def test_staging_module_does_not_import_airflow() -> None:
    import subprocess
    import sys

    code = "import sys, airflow_provider_sky.storage.staging; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
