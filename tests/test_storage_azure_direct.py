"""Direct Shared Key writes (Put Blob / Put Block without the SDK pipeline) against Azurite,
which checks every signature and every Content-MD5."""

from __future__ import annotations

import base64
import hashlib
import logging
import random

import pytest

from airflow_provider_sky.storage import NotFound, open_uri
from airflow_provider_sky.storage.azure_sharedkey import (
    AzureHTTPError,
    SharedKeyBlobWriter,
    SignatureRefused,
    plain_account,
)
from airflow_provider_sky.storage.base import META_CRC32C, META_MD5, META_SRC_ETAG, PartResult, crc32c_value
from airflow_provider_sky.storage.transfer import is_transient
from tests.emulators import AZURITE_ACCOUNT, AZURITE_KEY, get_emulator, unique_name

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
    """Blocks staged directly are listed (for resume) by the SDK under the ids the engine gave
    them, and committed by the direct Put Block List in part order."""
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


def test_plain_store_lists_heads_commits_and_deletes_without_the_sdk(azure):
    """With a Shared Key connection string the store lists (page by page), heads, writes, commits
    blocks and deletes directly, with the answers the SDK gives; the SDK client is made only when
    something else (here a read) first needs it."""
    emu, container, _ = azure
    store, _ = open_uri(emu.uri(container, ""), **emu.options())
    assert store._service is None and store._direct is not None
    blobs = {
        k: random.Random(k).randbytes(2000 + i) for i, k in enumerate(sorted([*KEYS, "m/a", "m/b", "m/c"]))
    }
    for k, data in blobs.items():
        store.write(k, data, metadata={"origin": "test", "n": str(len(data))}, md5=hashlib.md5(data).digest())
    parts = [random.Random(i).randbytes(MiB + i) for i in range(3)]
    up = store.begin_multipart("big/obj.bin")
    results = []
    for number, data in reversed(list(enumerate(parts, 1))):  # uploaded out of order
        md5 = hashlib.md5(data).digest()
        token = up.upload_part(number, memoryview(data), md5, 0)
        results.append(PartResult(number, len(data), md5, crc32c_value(data), token=token))
    info = up.complete(results, metadata={META_SRC_ETAG: "abc"})
    assert info.size == sum(map(len, parts)) and info.metadata == {META_SRC_ETAG: "abc"}
    store._direct.page_size = 2  # several pages, with markers
    listed = list(store.list(""))
    assert store._service is None  # nothing so far needed the SDK

    sdk = emu.store(container, create=False)
    sdk._direct = None  # the reference: everything through the SDK
    expect = {p.name: p for p in sdk.container.list_blobs(include=["metadata"])}
    assert [o.key for o in listed] == sorted(expect)
    for o in listed:
        ref = expect[o.key]
        assert o.size == ref.size and o.etag == ref.etag.strip('"') and o.metadata == ref.metadata
        assert o.md5 == (
            bytes(ref.content_settings.content_md5).hex() if ref.content_settings.content_md5 else None
        )
        assert abs(o.mtime - ref.last_modified.timestamp()) < 1
        head = store.head(o.key)
        assert (head.size, head.etag, head.md5, head.metadata) == (o.size, o.etag, o.md5, o.metadata)
    props = sdk._blob("big/obj.bin").get_blob_properties()
    assert props.content_settings.content_type == "application/octet-stream"
    assert [o.key for o in store.list("m/")] == ["m/a", "m/b", "m/c"]
    assert store.head("missing.bin") is None

    store.delete("m/a")
    store.delete("m/a")  # already gone: not an error
    assert store.head("m/a") is None and sdk.head("m/a") is None
    assert store._service is None
    assert store.read("big/obj.bin") == b"".join(parts)  # reads use the SDK: now it exists
    assert store._service is not None


def test_plain_listing_of_a_missing_container_is_not_found():
    emu = get_emulator("azure")
    store, _ = open_uri(emu.uri(unique_name("never"), ""), **emu.options())
    with pytest.raises(NotFound) as err:
        list(store.list(""))
    assert store.uri() in str(err.value) and store._service is None


def test_plain_account_only_for_a_shared_key(monkeypatch):
    for var in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "SKY_AZURE_DIRECT",
    ):
        monkeypatch.delenv(var, raising=False)
    key = AZURITE_KEY
    assert plain_account(None, connection_string="UseDevelopmentStorage=true") == (
        f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}",
        AZURITE_ACCOUNT,
        key,
    )
    conn = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.chinacloudapi.cn"
    assert plain_account("acct", connection_string=conn) == (
        "https://acct.blob.core.chinacloudapi.cn",
        "acct",
        key,
    )
    conn = f"AccountName=acct;AccountKey={key};BlobEndpoint=http://127.0.0.1:5/acct/"
    assert plain_account("acct", connection_string=conn)[0] == "http://127.0.0.1:5/acct"
    assert plain_account("acct", account_key=key) == ("https://acct.blob.core.windows.net", "acct", key)
    assert (
        plain_account(
            "acct", connection_string="BlobEndpoint=https://a.example;SharedAccessSignature=sv=1&sig=x"
        )
        is None
    )
    assert plain_account("acct", connection_string="AccountName=acct;AccountKey=not base64!") is None
    assert plain_account("acct") is None  # AAD / default credential: the SDK's
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert plain_account("acct", account_key=key) is None
    monkeypatch.delenv("https_proxy")
    monkeypatch.setenv("SKY_AZURE_DIRECT", "0")
    assert plain_account("acct", account_key=key) is None
