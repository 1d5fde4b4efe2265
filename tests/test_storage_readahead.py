"""Read-ahead of large-object stripes and lazy SDK imports, observed without timing: an
instrumented file store records how far the source was read whenever a part upload starts."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from typing import Any

import pytest

from airflow_provider_sky.storage.local import FileStore, _FileMultipart
from airflow_provider_sky.storage.transfer import TransferEngine, TransferError

PART = 64 << 10
NPARTS = 8


class _Counter:
    def __init__(self) -> None:
        self.read = 0
        self.cond = threading.Condition()

    def add(self, n: int) -> None:
        with self.cond:
            self.read += n
            self.cond.notify_all()

    def wait_for(self, target: int, deadline: float = 20.0) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.read >= target, timeout=deadline)
            return self.read


class _CountingStream:
    def __init__(self, inner: Any, counter: _Counter):
        self.inner, self.counter = inner, counter

    def readinto(self, view: Any) -> int:
        n = self.inner.readinto(view)
        self.counter.add(n or 0)
        return n

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.counter.add(len(data))
        return data

    def close(self) -> None:
        self.inner.close()


class _Source(FileStore):
    def __init__(self, root: str, counter: _Counter):
        super().__init__(root)
        self.counter = counter

    def open_range(self, key: str, start: int, end: int) -> Any:
        return _CountingStream(super().open_range(key, start, end), self.counter)


class _Upload(_FileMultipart):
    def __init__(self, store: _Dest, key: str):
        super().__init__(store, key)
        self.dest = store

    def upload_part(self, number: int, data: Any, md5: bytes, offset: int) -> str:
        d = self.dest
        # Parts read (or being read) while part `number` is uploaded: parts 1..number-1 are done.
        at_start = d.counter.read
        target = min(d.total, (number + d.read_ahead) * PART)
        seen = d.counter.wait_for(target) if d.read_ahead else at_start
        d.held.append(-(-max(at_start, seen) // PART) - (number - 1))
        d.overlapped.append(seen >= target)
        return super().upload_part(number, data, md5, offset)


class _Dest(FileStore):
    def __init__(self, root: str, counter: _Counter, read_ahead: int):
        super().__init__(root)
        self.counter, self.read_ahead = counter, read_ahead
        self.total = NPARTS * PART - 1000
        self.held: list[int] = []
        self.overlapped: list[bool] = []

    def begin_multipart(self, key: str, metadata: Any = None) -> Any:
        return _Upload(self, key)


@pytest.mark.parametrize("read_ahead", [0, 1, 2])
def test_stripe_reads_ahead_of_its_upload_within_bound(tmp_path, read_ahead):
    data = random.Random(read_ahead).randbytes(NPARTS * PART - 1000)  # last part short
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    counter = _Counter()
    src = _Source(str(tmp_path / "src"), counter)
    dst = _Dest(str(tmp_path / "dst"), counter, read_ahead)
    engine = TransferEngine(
        src,
        "big.bin",
        dst,
        "big.bin",
        part_size=PART,
        multipart_threshold=PART,
        memory_budget=16 * PART,
        streams=1,
        read_ahead=read_ahead,
        server_side=False,
        resume=False,
    )
    report = engine.run()
    assert report.verified and report.files_copied == 1
    assert (tmp_path / "dst" / "big.bin").read_bytes() == data
    assert len(dst.held) == NPARTS
    # Never more than the part being uploaded plus `read_ahead` parts held by the stream ...
    assert max(dst.held) <= 1 + read_ahead
    assert engine.budget.peak <= (1 + read_ahead) * PART
    if read_ahead:
        # ... and the next part(s) are read while each part is still being uploaded.
        assert all(dst.overlapped), dst.overlapped
        assert max(dst.held) == 1 + read_ahead
    else:
        assert max(dst.held) == 1


def test_opening_one_store_imports_only_its_sdk():
    code = (
        "import json, sys\n"
        "from airflow_provider_sky.storage import store_for_uri\n"
        "from airflow_provider_sky.storage.transfer import TransferEngine\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure') or m.startswith('google.cloud'))\n"
        "store_for_uri('s3://bucket/', endpoint_url='http://127.0.0.1:9', region_name='us-east-1',"
        " aws_access_key_id='k', aws_secret_access_key='s')\n"
        "opened = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure') or m.startswith('google.cloud'))\n"
        "store_for_uri('s3://bucket/', endpoint_url='http://127.0.0.1:9', region_name='us-east-1', verify=False)\n"
        "after = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure') or m.startswith('google.cloud'))\n"
        "print(json.dumps([before, opened, after]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, opened, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == []  # importing the storage layer and the engine loads no cloud SDK
    # An S3 store with plain keys and endpoint reads, heads and lists without botocore ...
    assert opened == []
    # ... one with settings only botocore applies (verify=False) loads it, and nothing else.
    assert "botocore" in after
    assert not [m for m in after if m.startswith(("azure", "google.cloud"))]


class _BrokenStream(_CountingStream):
    def readinto(self, view: Any) -> int:
        if self.counter.read >= 3 * PART:
            raise ValueError("source went bad")  # not transient: the object fails at once
        return super().readinto(view)


class _BrokenSource(_Source):
    def open_range(self, key: str, start: int, end: int) -> Any:
        return _BrokenStream(FileStore.open_range(self, key, start, end), self.counter)


def test_failed_stripes_with_parts_read_ahead_return_every_buffer(tmp_path):
    """Two stripes sharing a two-part budget, both holding parts read ahead when the object
    fails: the copy fails (it does not hang) and every buffer goes back to the budget."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(random.Random(5).randbytes(NPARTS * PART))
    engine = TransferEngine(
        _BrokenSource(str(tmp_path / "src"), _Counter()),
        "big.bin",
        FileStore(str(tmp_path / "dst")),
        "big.bin",
        part_size=PART,
        multipart_threshold=PART,
        memory_budget=2 * PART,
        streams=2,
        read_ahead=1,
        server_side=False,
        resume=False,
    )
    with pytest.raises(TransferError) as err:
        engine.run()
    assert "source went bad" in str(err.value)
    assert engine.budget.available == engine.budget.capacity
    assert not (tmp_path / "dst" / "big.bin").exists()
