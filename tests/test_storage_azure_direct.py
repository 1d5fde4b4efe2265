"""Direct Shared Key writes (Put Blob / Put Block without the SDK pipeline) against Azurite,
which checks every signature and every Content-MD5."""

from __future__ import annotations

import base64
import hashlib
import logging
import random

import pytest

from airflow_provider_sky.storage import open_uri
from airflow_provider_sky.storage.azure_sharedkey import AzureHTTPError, SharedKeyBlobWriter, SignatureRefused
from airflow_provider_sky.storage.base import META_CRC32C, META_MD5, META_SRC_ETAG, PartResult, crc32c_value
from airflow_provider_sky.storage.transfer import is_transient
from tests.emulators import AZURITE_ACCOUNT, get_emulator, unique_name

MiB = 1 << 20
KEYS = ["plain.bin", "dir/with space+plus%pct.bin", "q?hash#eq=amp&.bin", "ünï/cödé~tilde.bin"]


@pytest.fixture
def azure():
    emu = get_emulator("azure")
    container = unique_name("dir")
    store = emu.store(container)
    assert store._direct is not None, "a connection string with an AccountKey should write directly"
    return emu, container, store


def _writer(store, key: str) -> SharedKeyBlobWriter:
    return SharedKeyBlobWriter(store.service.url, store.bucket, AZURITE_ACCOUNT, key)


@pytest.mark.parametrize("key", KEYS)
def test_direct_put_blob_is_signed_and_stored_like_the_sdk_would(azure, key):
    _emu, _container, store = azure
    data = random.Random(key).randbytes(150_000)
    md5 = hashlib.md5(data).digest()
    meta = {META_MD5: md5.hex(), META_CRC32C: "AAAAAA==", META_SRC_ETAG: '"etag-1"'}
    info = store.write(key, data, metadata=meta, md5=md5)
    assert store._direct is not None  # no fallback happened
    assert info.size == len(data) and info.md5 == md5.hex() and info.etag
    # read back through the SDK: bytes, stored MD5, content type and metadata as the SDK writes them
    props = store._blob(key).get_blob_properties()
    assert bytes(props.content_settings.content_md5) == md5
    assert props.content_settings.content_type == "application/octet-stream"
    assert props.metadata == meta
    assert store.read(key) == data
    assert [o.key for o in store.list(key)] == [key]


def test_wrong_key_is_refused_and_the_store_falls_back_to_the_sdk(azure, caplog):
    _emu, _container, store = azure
    wrong = base64.b64encode(b"not the account key").decode()
    with pytest.raises(SignatureRefused) as err:
        _writer(store, wrong).put_blob("x.bin", b"abc", hashlib.md5(b"abc").digest(), None)
    assert (
        err.value.status_code == 403
    )  # Azurite checks signatures: the other tests' successes mean something
    store._direct = _writer(store, wrong)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_sky.storage.azure"):
        info = store.write("y.bin", b"hello", md5=hashlib.md5(b"hello").digest())
    assert store._direct is None
    assert "writing through the Azure SDK from now on" in caplog.text
    assert "not the account key" not in caplog.text and wrong not in caplog.text
    assert info.size == 5 and store.read("y.bin") == b"hello"


def test_content_md5_mismatch_is_a_non_transient_error(azure):
    _emu, _container, store = azure
    bad = hashlib.md5(b"something else").digest()
    with pytest.raises(AzureHTTPError) as err:
        store._direct.put_blob("bad.bin", b"payload", bad, None)
    assert err.value.status_code == 400 and not is_transient(err.value)
    with pytest.raises(AzureHTTPError) as err:
        store._direct.put_block("bad2.bin", base64.b64encode(b"blk-1").decode(), b"payload", bad)
    assert err.value.status_code == 400
    assert store.head("bad.bin") is None and store.head("bad2.bin") is None


def test_direct_blocks_commit_and_list_as_sdk_blocks(azure):
    """Blocks staged directly are committed by the SDK's block list and listed (for resume) under
    the ids the engine gave them."""
    _emu, _container, store = azure
    parts = [random.Random(i).randbytes(MiB + i) for i in range(3)]
    up = store.begin_multipart("big/obj.bin")
    results = []
    for number, data in enumerate(parts, 1):
        md5 = hashlib.md5(data).digest()
        token = up.upload_part(number, memoryview(data), md5, 0)
        results.append(PartResult(number, len(data), md5, crc32c_value(data), token=token))
    assert store._direct is not None
    _committed, uncommitted = store._blob("big/obj.bin").get_block_list("uncommitted")
    assert sorted(b.id for b in uncommitted) == sorted(up.tokens.values())
    info = up.complete(results)
    assert info.size == sum(map(len, parts))
    assert store.read("big/obj.bin") == b"".join(parts)


def test_direct_writes_off_by_environment(monkeypatch):
    monkeypatch.setenv("SKY_AZURE_DIRECT", "0")
    emu = get_emulator("azure")
    store, _ = open_uri(emu.uri(unique_name("off"), ""), **emu.options())
    assert store._direct is None
