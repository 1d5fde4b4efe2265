"""GCS listing, heads and reads as plain JSON/media requests on the store's session (against
fake-gcs-server), compared with google-cloud-storage's answers; the SDK client is made only when
something else (a write here) first needs it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from airflow_provider_sky.storage import NotFound, open_uri
from tests.emulators import get_emulator, unique_name

KEYS = ["plain.bin", "dir/with space+plus%pct.bin", "q?hash#eq=amp&.bin", "ünï/cödé~tilde.bin"]


def test_json_listing_heads_and_reads_match_the_sdk():
    emu = get_emulator("gcs")
    bucket = unique_name("gjson")
    seeded = emu.store(bucket)
    blobs = {k: random.Random(k).randbytes(3000 + i) for i, k in enumerate(sorted([*KEYS, "m/a", "m/b"]))}
    for k, data in blobs.items():
        seeded.write(k, data, metadata={"origin": "test", "n": str(len(data))})

    store, _ = open_uri(emu.uri(bucket, ""), **emu.options())
    assert store._client is None
    store.page_size = 2  # several pages, with page tokens
    listed = list(store.list(""))
    expect = {b.name: b for b in seeded.client.list_blobs(bucket)}
    assert [o.key for o in listed] == sorted(expect)
    for o in listed:
        ref = expect[o.key]
        assert (o.size, o.crc32c is not None, o.metadata) == (ref.size, True, ref.metadata)
        assert o.md5 == hashlib.md5(blobs[o.key]).hexdigest()
        assert abs(o.mtime - ref.updated.timestamp()) < 1
        head = store.head(o.key)
        assert (head.size, head.md5, head.crc32c, head.metadata) == (o.size, o.md5, o.crc32c, o.metadata)
        with store.open_range(o.key, 5, 2005) as stream:
            buf = bytearray(2000)
            n = 0
            while n < len(buf):
                got = stream.readinto(memoryview(buf)[n:])
                assert got
                n += got
        assert bytes(buf) == blobs[o.key][5:2005]
    assert [o.key for o in store.list("m/")] == ["m/a", "m/b"]
    assert store.head("missing.bin") is None
    assert store._client is None  # nothing so far needed google-cloud-storage

    store.write("new.bin", b"through the SDK")
    assert store._client is not None and store.read("new.bin") == b"through the SDK"


def test_json_listing_of_a_missing_bucket_is_not_found():
    emu = get_emulator("gcs")
    store, _ = open_uri(emu.uri(unique_name("never"), ""), **emu.options())
    with pytest.raises(NotFound) as err:
        list(store.list(""))
    assert store.uri() in str(err.value) and store._client is None


def test_a_reading_store_does_not_import_google_cloud_storage():
    emu = get_emulator("gcs")
    bucket = unique_name("gimp")
    emu.store(bucket).write("x/one.bin", b"payload")
    code = (
        "import json, sys\n"
        "from airflow_provider_sky.storage import open_uri\n"
        f"store, _ = open_uri({emu.uri(bucket, '')!r}, **json.loads(sys.argv[1]))\n"
        "keys = [o.key for o in store.list('x/')]\n"
        "data = store.read('x/one.bin')\n"
        "print(json.dumps([keys, data.decode(), sorted(m for m in sys.modules if m.startswith('google.cloud'))]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(emu.options())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    keys, data, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys == ["x/one.bin"] and data == "payload"
    assert loaded == []
