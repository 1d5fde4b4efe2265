"""Failures on the emulators: a copy killed mid-way then resumed, corrupted objects, an emulator restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_sky.storage import TransferError, open_uri, transfer, verify
from airflow_provider_sky.storage.transfer import TransferEngine
from tests.emulators import REPO, get_emulator, unique_name

MiB = 1 << 20


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write_tree(root: Path, n: int, size: int, big: int = 0) -> dict[str, bytes]:
    files = {f"part-{i // 50}/f{i:04d}.bin": _bytes(size + i, i) for i in range(n)}
    if big:
        files["big/large.bin"] = _bytes(big, 424242)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_kill_mid_copy_then_resume_copies_only_missing(tmp_path):
    """SIGKILL a copying process half-way; the rerun skips what arrived and copies the rest."""
    emu = get_emulator("s3")
    bucket = unique_name("kill")
    emu.store(bucket)
    src = tmp_path / "src"
    files = _write_tree(src, 400, 8000, big=12 * MiB)
    dst_uri = emu.uri(bucket, "out/")
    script = textwrap.dedent(
        f"""
        import json, sys
        from airflow_provider_sky.storage import transfer
        def progress(p):
            print(p.files_done, flush=True)
        transfer({f"file://{src}/"!r}, {dst_uri!r}, dst_options=json.loads(sys.argv[1]), workers=2,
                 part_size=5 << 20, multipart_threshold=6 << 20, progress=progress, progress_interval=0.02)
        print("DONE", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(emu.options())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("DONE"):
                pytest.fail("the copy finished before it could be killed")
            if int(line) >= 100:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    store, prefix = open_uri(dst_uri, **emu.options())
    present = {o.key[len(prefix) :] for o in store.list(prefix)}
    assert 100 <= len(present) < len(files)
    report = transfer(
        f"file://{src}/", dst_uri, dst_options=emu.options(), part_size=5 * MiB, multipart_threshold=6 * MiB
    )
    assert report.files_skipped == len(present)
    assert report.files_copied == len(files) - len(present)
    assert report.verified
    assert verify(f"file://{src}/", dst_uri, dst_options=emu.options()).ok


def _tamper_file(path: Path, offset: int = 0) -> None:
    """Flip one byte in place (same size; xattrs and the store's recorded checksums untouched)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_source_object_fails_the_copy(tmp_path):
    """fake-gcs serves bytes that no longer match the MD5/CRC32C it recorded: a failure, not a copy."""
    gcs, s3 = get_emulator("gcs"), get_emulator("s3")
    bucket, out = unique_name("rot"), unique_name("out")
    store = gcs.store(bucket)
    s3.store(out)
    store.write("data/good.bin", _bytes(40_000, 1))
    store.write("data/bad.bin", _bytes(40_000, 2))
    store.write("data/big.bin", _bytes(12 * MiB, 3))
    _tamper_file(Path(gcs.root) / bucket / "data" / "bad.bin", 1234)
    _tamper_file(Path(gcs.root) / bucket / "data" / "big.bin", 7 * MiB)
    with pytest.raises(TransferError) as err:
        transfer(
            gcs.uri(bucket, "data/"),
            s3.uri(out, "data/"),
            src_options=gcs.options(),
            dst_options=s3.options(),
            part_size=5 * MiB,
            multipart_threshold=6 * MiB,
        )
    report = err.value.report
    assert not report.verified
    assert sorted(rel for rel, _ in report.failures) == ["bad.bin", "big.bin"]
    assert all("IntegrityError" in why for _, why in report.failures)
    dst, _ = open_uri(s3.uri(out), **s3.options())
    assert sorted(o.key for o in dst.list()) == ["data/good.bin"]  # nothing corrupt was published


def test_corrupted_destination_detected_and_repaired(tmp_path):
    """Bit rot at the destination: a deep verify finds it; overwrites through the API are recopied."""
    s3, gcs = get_emulator("s3"), get_emulator("gcs")
    src_bucket, dst_bucket = unique_name("src"), unique_name("dst")
    src_store = s3.store(src_bucket)
    dst_store = gcs.store(dst_bucket)
    for i in range(5):
        src_store.write(f"d/f{i}", _bytes(10_000, i))
    src_uri, dst_uri = s3.uri(src_bucket, "d/"), gcs.uri(dst_bucket, "d/")
    opts = {"src_options": s3.options(), "dst_options": gcs.options()}
    transfer(src_uri, dst_uri, **opts)

    _tamper_file(Path(gcs.root) / dst_bucket / "d" / "f1", 10)  # bytes change, metadata does not
    dst_store.write("d/f3", _bytes(10_000, 999))  # same size, different content, via the API
    shallow = verify(src_uri, dst_uri, **opts)
    assert shallow.mismatched == ["f3"]
    deep = verify(src_uri, dst_uri, deep=True, **opts)
    assert deep.mismatched == ["f1", "f3"]

    repair = transfer(src_uri, dst_uri, **opts)
    assert repair.files_copied == 1 and repair.files_skipped == 4  # f3 recopied
    dst_store.delete("d/f1")  # the rotten one: delete and let the incremental copy restore it
    assert transfer(src_uri, dst_uri, **opts).files_copied == 1
    assert verify(src_uri, dst_uri, deep=True, **opts).ok


@pytest.mark.parametrize("kind", ["azure", "gcs"])
def test_destination_emulator_restarted_mid_copy(kind, tmp_path):
    """The destination service goes away for a moment in the middle: retries carry the copy through."""
    s3, emu = get_emulator("s3"), get_emulator(kind)
    src_bucket, dst_bucket = unique_name("src"), unique_name("dst")
    src_store = s3.store(src_bucket)
    emu.store(dst_bucket)
    n = 240
    for i in range(n):
        src_store.write(f"r/f{i:04d}", _bytes(30_000 + i, i))
    src_store.write("r/zz-big", _bytes(16 * MiB, 77))
    restarted, down = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    def bounce():
        emu.stop()
        times["down"] = time.monotonic()
        down.set()
        time.sleep(1.0)
        emu.start()
        times["up"] = time.monotonic()

    def restart_once(progress):
        if progress.files_done >= 40 and not restarted.is_set():
            restarted.set()
            threading.Thread(target=bounce, daemon=True).start()

    src_uri, dst_uri = s3.uri(src_bucket, "r/"), emu.uri(dst_bucket, "r/")
    opts = {"src_options": s3.options(), "dst_options": emu.options()}
    src, src_key = open_uri(src_uri, **s3.options())
    dst, dst_key = open_uri(dst_uri, **emu.options())
    # Once the restart is due, reads wait until the service is down: the copy cannot outrun it.
    read, open_range = src.read, src.open_range

    def held(fn):
        def call(*args, **kwargs):
            if restarted.is_set():
                down.wait(30)
            return fn(*args, **kwargs)

        return call

    src.read, src.open_range = held(read), held(open_range)
    started = time.monotonic()
    report = TransferEngine(
        src,
        src_key,
        dst,
        dst_key,
        workers=4,
        part_size=4 * MiB,
        multipart_threshold=4 * MiB,
        progress=restart_once,
        progress_interval=0.02,
    ).run()
    finished = time.monotonic()
    assert restarted.is_set() and times.get("down", finished) < finished, (
        "the copy finished before the restart"
    )
    assert times["up"] < finished  # it had to wait for the service to come back
    assert report.files_copied + report.files_skipped == n + 1 and report.verified
    assert time.monotonic() - started < 120
    check = verify(src_uri, dst_uri, **opts)
    assert check.ok, check
    assert transfer(src_uri, dst_uri, **opts).files_copied == 0
