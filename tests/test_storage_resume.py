"""Resume inside one large object: a copy interrupted mid-object continues its multipart upload
(S3 parts, Azure uncommitted blocks, GCS resumable sessions) and reads only the missing parts."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_sky.storage import TransferError, open_uri, verify
from airflow_provider_sky.storage.base import RESUME_PREFIX, SCRATCH_PREFIX
from airflow_provider_sky.storage.local import FileStore
from airflow_provider_sky.storage.transfer import TransferEngine
from tests.emulators import REPO, get_emulator, unique_name

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part
SIZE = 5 * PART + 123  # 6 parts, the last one short
OPTS = {
    "part_size": PART,
    "multipart_threshold": PART,
    "memory_budget": 2 * PART,
    "workers": 4,
    "checkpoint_interval": 0.1,  # record the resume state as parts arrive (default: every 2 s)
}


class _Injected(ValueError):
    """A non-transient failure injected into the source stream."""


class CountingFileStore(FileStore):
    """file:// source that counts the bytes read for copies and can fail after `fail_after` bytes."""

    def __init__(self, root: str, fail_after: int | None = None):
        super().__init__(root)
        self.bytes_read = 0
        self.fail_after = fail_after

    def open_range(self, key, start, end):
        store, inner = self, super().open_range(key, start, end)

        class Stream:
            def readinto(self, b):
                if store.fail_after is not None and store.bytes_read + len(b) > store.fail_after:
                    raise _Injected("source went away")
                n = inner.readinto(b)
                store.bytes_read += n
                return n

            def close(self):
                inner.close()

        return Stream()


def _source(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "src"
    (root / "big").mkdir(parents=True)
    data = random.Random(5).randbytes(SIZE)
    (root / "big" / "obj.bin").write_bytes(data)
    return root, data


def _resume_states(store) -> list[str]:
    """Resume checkpoints left in the destination (hidden from `list`, so read them directly)."""
    if store.scheme == "s3":
        resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=RESUME_PREFIX)
        return [o["Key"] for o in resp.get("Contents", ())]
    if store.scheme == "gs":
        return [b.name for b in store.client.list_blobs(store.bucket, prefix=RESUME_PREFIX)]
    return [b.name for b in store.container.list_blobs(name_starts_with=RESUME_PREFIX)]


@pytest.mark.parametrize(
    ("kind", "streams"),
    [("s3", 1), ("azure", 1), ("gcs", 1), ("gcs", 2)],
    ids=["s3", "azure", "gcs", "gcs-2-stripes"],
)
def test_failure_mid_object_then_resume_reads_only_missing_parts(kind, streams, tmp_path):
    emu = get_emulator(kind)
    bucket = unique_name("res")
    emu.store(bucket)
    root, data = _source(tmp_path)
    # GCS: one PUT per part, so each part is acknowledged on its own (the default sends up to
    # 64 MiB of parts per PUT; see the test of that below).
    chunk = {"resumable_chunk_size": PART} if kind == "gcs" else {}
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options(), **chunk)

    # 1st run: the source fails while reading the 3rd part of each stripe.
    failing = CountingFileStore(str(root), fail_after=(2 * PART + MiB) if streams == 1 else 5 * PART)
    with pytest.raises(TransferError) as err:
        TransferEngine(failing, "big/", dst, prefix, streams=streams, **OPTS).run()
    assert [rel for rel, _ in err.value.report.failures] == ["obj.bin"]
    assert dst.head(prefix + "obj.bin") is None  # nothing half-done is published
    assert len(_resume_states(dst)) == 1
    uploaded = failing.bytes_read  # every part read in full was uploaded before the failure
    assert 2 * PART <= uploaded < SIZE

    # 2nd run: only the missing parts are read from the source.
    counting = CountingFileStore(str(root))
    report = TransferEngine(counting, "big/", dst, prefix, streams=streams, **OPTS).run()
    assert report.files_copied == 1 and report.verified, report
    assert report.bytes_resumed == uploaded
    assert counting.bytes_read == SIZE - uploaded
    got = dst.read(prefix + "obj.bin")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert verify(f"file://{root}/big/", emu.uri(bucket, "out/"), dst_options=emu.options(), deep=True).ok
    assert _resume_states(dst) == []  # the checkpoint is gone with the finished upload
    if kind == "gcs":
        assert list(dst.client.list_blobs(dst.bucket, prefix=SCRATCH_PREFIX)) == []


def test_changed_source_discards_the_partial_upload(tmp_path):
    """The source was rewritten between the runs: the old parts are not reused (S3 upload aborted)."""
    emu = get_emulator("s3")
    bucket = unique_name("chg")
    emu.store(bucket)
    root, _ = _source(tmp_path)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options())
    with pytest.raises(TransferError):
        TransferEngine(
            CountingFileStore(str(root), fail_after=3 * PART), "big/", dst, prefix, streams=1, **OPTS
        ).run()
    assert dst.client.list_multipart_uploads(Bucket=bucket).get("Uploads")

    new = random.Random(6).randbytes(SIZE)
    (root / "big" / "obj.bin").write_bytes(new)
    os.utime(root / "big" / "obj.bin", ns=(1, 10**18))  # a different etag for sure
    counting = CountingFileStore(str(root))
    report = TransferEngine(counting, "big/", dst, prefix, streams=1, **OPTS).run()
    assert report.verified and report.bytes_resumed == 0 and counting.bytes_read == SIZE
    assert dst.read(prefix + "obj.bin") == new
    assert not dst.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert _resume_states(dst) == []


def test_sigkill_mid_object_then_resume(tmp_path):
    """A copying process is SIGKILLed in the middle of a large object bound for Azure; the rerun
    continues from the uncommitted blocks it staged."""
    emu = get_emulator("azure")
    bucket = unique_name("kill")
    emu.store(bucket)
    root, data = _source(tmp_path)
    dst_uri = emu.uri(bucket, "out/")
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from airflow_provider_sky.storage import open_uri
        from airflow_provider_sky.storage.local import FileStore
        from airflow_provider_sky.storage.transfer import TransferEngine

        class Slow(FileStore):  # one part every 0.3 s, so the kill lands mid-object
            def open_range(self, key, start, end):
                inner = super().open_range(key, start, end)
                class S:
                    def readinto(self, b):
                        time.sleep(0.3)
                        return inner.readinto(b)
                    def close(self):
                        inner.close()
                return S()

        dst, prefix = open_uri({dst_uri!r}, **json.loads(sys.argv[1]))
        TransferEngine(Slow({str(root)!r}), "big/", dst, prefix, streams=1,
                       progress=lambda p: print(p.bytes_done, flush=True), progress_interval=0.02,
                       **json.loads(sys.argv[2])).run()
        print("DONE", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(emu.options()), json.dumps(OPTS)],
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
            if int(line) >= 3 * PART:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    dst, prefix = open_uri(dst_uri, **emu.options())
    assert dst.head(prefix + "obj.bin") is None
    counting = CountingFileStore(str(root))
    report = TransferEngine(counting, "big/", dst, prefix, streams=1, **OPTS).run()
    assert report.files_copied == 1 and report.verified, report
    assert report.bytes_resumed >= 2 * PART  # the checkpoint may lag the last part or so
    assert counting.bytes_read == SIZE - report.bytes_resumed
    assert dst.read(prefix + "obj.bin") == data


def test_gcs_session_lost_restarts_the_stripe(tmp_path):
    """fake-gcs-server restarted between the runs forgets its resumable sessions: the rerun finds
    the recorded session gone, sends the whole stripe again in a new one, and still verifies."""
    emu = get_emulator("gcs")
    bucket = unique_name("lost")
    emu.store(bucket)
    root, data = _source(tmp_path)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options(), resumable_chunk_size=PART)
    with pytest.raises(TransferError):
        TransferEngine(
            CountingFileStore(str(root), fail_after=3 * PART), "big/", dst, prefix, streams=1, **OPTS
        ).run()
    assert len(_resume_states(dst)) == 1
    emu.restart()
    counting = CountingFileStore(str(root))
    report = TransferEngine(counting, "big/", dst, prefix, streams=1, **OPTS).run()
    assert report.files_copied == 1 and report.verified, report
    # the part whose PUT found the session gone (and the part the stream may have read ahead
    # meanwhile), then the whole stripe again
    assert PART + SIZE <= counting.bytes_read <= 2 * PART + SIZE and report.bytes_resumed == 0
    assert dst.read(prefix + "obj.bin") == data
    assert _resume_states(dst) == []


def test_finished_copy_does_not_wait_for_its_checkpoint(tmp_path):
    """A pending resume checkpoint is dropped as soon as its object is done: the run ends without
    waiting out `checkpoint_interval` and leaves no resume state behind."""
    emu = get_emulator("s3")
    bucket = unique_name("fin")
    emu.store(bucket)
    root, data = _source(tmp_path)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options())
    interval = 120.0
    engine = TransferEngine(
        FileStore(str(root)), "big/", dst, prefix, streams=2, **{**OPTS, "checkpoint_interval": interval}
    )
    report = engine.run()
    assert report.files_copied == 1 and report.verified, report
    # Copying 26 MiB to a local emulator takes a few seconds at most; before the fix every
    # object with a pending checkpoint held the run for the whole interval.
    assert report.seconds < interval / 4, report.seconds
    assert dst.read(prefix + "obj.bin") == data
    assert _resume_states(dst) == []


def test_gcs_parts_share_a_put_and_a_failed_put_is_sent_again(tmp_path):
    """With a resumable chunk of two parts, each PUT streams two parts of the stripe; a source
    failure inside the second PUT loses that PUT's parts only, and the rerun sends them again."""
    emu = get_emulator("gcs")
    bucket = unique_name("chunk")
    emu.store(bucket)
    root, data = _source(tmp_path)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options(), resumable_chunk_size=2 * PART)
    puts: list[int] = []
    original = dst._resumable_put

    def counting_put(url, key, body, start, total):
        puts.append(len(body))
        return original(url, key, body, start, total)

    dst._resumable_put = counting_put
    # The source fails in the 4th part: the first PUT (parts 1-2) is acknowledged, the second
    # (parts 3-4) is cut off mid-request.
    failing = CountingFileStore(str(root), fail_after=3 * PART + MiB)
    with pytest.raises(TransferError):
        TransferEngine(failing, "big/", dst, prefix, streams=1, **OPTS).run()
    assert puts == [2 * PART, 2 * PART]
    assert dst.head(prefix + "obj.bin") is None

    puts.clear()
    counting = CountingFileStore(str(root))
    report = TransferEngine(counting, "big/", dst, prefix, streams=1, **OPTS).run()
    assert report.files_copied == 1 and report.verified, report
    assert report.bytes_resumed == 2 * PART  # the acknowledged PUT only
    assert counting.bytes_read == SIZE - 2 * PART
    assert puts == [2 * PART, SIZE - 4 * PART]  # parts 3-4, then the short last PUT (parts 5-6)
    assert dst.read(prefix + "obj.bin") == data
    assert _resume_states(dst) == []


def test_gcs_stripe_goes_in_one_put_by_default(tmp_path):
    """Default chunk (64 MiB): a 26 MiB object is one streamed PUT, not one per part."""
    emu = get_emulator("gcs")
    bucket = unique_name("one")
    emu.store(bucket)
    root, data = _source(tmp_path)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options())
    puts: list[int] = []
    original = dst._resumable_put
    dst._resumable_put = lambda url, key, body, start, total: (
        puts.append(len(body)) or original(url, key, body, start, total)
    )
    report = TransferEngine(FileStore(str(root)), "big/", dst, prefix, streams=1, **OPTS).run()
    assert report.files_copied == 1 and report.verified, report
    assert puts == [SIZE]
    assert dst.read(prefix + "obj.bin") == data


def test_resume_states_are_found_by_one_listing(tmp_path):
    """With several large objects, the resume states are found by listing them once: only the
    states that exist are read (none on a fresh destination), and an interrupted copy still
    resumes."""
    emu = get_emulator("s3")
    bucket = unique_name("lst")
    emu.store(bucket)
    root = tmp_path / "src"
    (root / "big").mkdir(parents=True)
    blobs = {f"obj{i}.bin": random.Random(i).randbytes(SIZE) for i in range(3)}
    for name, data in blobs.items():
        (root / "big" / name).write_bytes(data)
    dst, prefix = open_uri(emu.uri(bucket, "out/"), **emu.options())
    reads: list[str] = []
    original = dst.read

    def counting_read(key, *args, **kwargs):
        reads.append(key)
        return original(key, *args, **kwargs)

    dst.read = counting_read
    # 1st run: the source fails part-way; some objects leave a resume state behind.
    with pytest.raises(TransferError):
        TransferEngine(
            CountingFileStore(str(root), fail_after=4 * PART), "big/", dst, prefix, streams=3, **OPTS
        ).run()
    assert [k for k in reads if k.startswith(RESUME_PREFIX)] == []  # fresh destination: no lookups
    states = _resume_states(dst)
    assert states

    reads.clear()
    report = TransferEngine(CountingFileStore(str(root)), "big/", dst, prefix, streams=3, **OPTS).run()
    assert report.files_copied == 3 and report.verified, report
    assert sorted(k for k in reads if k.startswith(RESUME_PREFIX)) == sorted(states)
    assert report.bytes_resumed > 0
    for name, data in blobs.items():
        assert dst.read(prefix + name) == data
    assert _resume_states(dst) == []
