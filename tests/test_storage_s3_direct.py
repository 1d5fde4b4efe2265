"""Direct S3 GETs (SigV4 signed here, sent over urllib3) against moto, and their signature
checked against botocore's own signer for the same request and time."""

from __future__ import annotations

import datetime
import hashlib
import logging
import random
from urllib.parse import quote

import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from airflow_provider_sky.storage import NotFound, open_uri
from airflow_provider_sky.storage.direct_http import DirectHTTPError
from airflow_provider_sky.storage.s3_direct import S3DirectReader, plain_endpoint, reader_for
from tests.emulators import get_emulator, unique_name

KEYS = ["plain.bin", "dir/with space+plus%pct.bin", "q?hash#eq=amp&.bin", "ünï/cödé~tilde.bin"]


@pytest.fixture
def s3():
    emu = get_emulator("s3")
    store = emu.store(unique_name("drct"))
    assert store._direct is not None, "a client with keys and a region should read directly"
    return store


@pytest.mark.parametrize("token", [None, "session-token-xyz"])
@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:5000/bucket-a/", "https://bucket-a.s3.eu-west-1.amazonaws.com/"]
)
@pytest.mark.parametrize("key", KEYS)
def test_signature_matches_botocore(key, base, token):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    reader = S3DirectReader(base, "eu-west-1", creds)
    now = datetime.datetime(2026, 12, 7, 20, 30, 5, tzinfo=datetime.UTC)
    path = reader._prefix + quote(key, safe="/~")
    ours = reader._headers(path, now)

    request = AWSRequest(method="GET", url=reader._origin + path)
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    request.headers["X-Amz-Date"] = now.strftime("%Y%m%dT%H%M%SZ")
    if token:
        request.headers["X-Amz-Security-Token"] = token
    request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(creds, "s3", "eu-west-1")
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    assert ours["Authorization"].endswith(f"Signature={signature}")
    assert f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(request))}," in ours["Authorization"]
    assert "wJalrXUtnFEMI" not in ours["Authorization"]


@pytest.mark.parametrize("key", KEYS)
def test_direct_reads_whole_and_ranged(s3, key):
    data = random.Random(key).randbytes(200_000)
    s3.write(key, data)
    assert s3.read(key) == data
    assert s3.read(key, 1000, 5000) == data[1000:5000]
    assert s3.read(key, 199_990) == data[199_990:]
    assert s3.read(key, 300_000) == b""  # past the end
    assert s3._direct is not None  # no fallback happened


def test_missing_object_and_bucket(s3):
    with pytest.raises(NotFound) as err:
        s3.read("nope.bin")
    assert s3.uri("nope.bin") in str(err.value)
    emu = get_emulator("s3")
    gone, _ = open_uri(emu.uri(unique_name("never")), **emu.options())
    with pytest.raises(DirectHTTPError) as err2:
        gone._direct.get("x.bin")
    assert err2.value.status_code == 404 and err2.value.error_code == "NoSuchBucket"


def test_refused_signature_falls_back_to_botocore(s3, caplog):
    s3.write("k.bin", b"payload")

    class Refusing(S3DirectReader):
        def get(self, key, start=0, end=None):
            from airflow_provider_sky.storage.direct_http import SignatureRefused

            raise SignatureRefused("GET k.bin: HTTP 403 SignatureDoesNotMatch", 403, "SignatureDoesNotMatch")

    base = f"{s3.client.meta.endpoint_url}/{s3.bucket}/"
    s3._direct = Refusing(base, "us-east-1", s3.client._request_signer._credentials)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_sky.storage.s3"):
        assert s3.read("k.bin") == b"payload"
    assert s3._direct is None and "using botocore for" in caplog.text


def test_not_used_without_credentials_or_when_turned_off(monkeypatch):
    emu = get_emulator("s3")
    store = emu.store(unique_name("anon"))
    unsigned = botocore.session.Session().create_client(
        "s3",
        endpoint_url=store.client.meta.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    assert reader_for(unsigned, store.bucket) is None
    monkeypatch.setenv("SKY_S3_DIRECT", "0")
    assert reader_for(store.client, store.bucket) is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("token", [None, "next/page+token=="])
def test_signature_with_query_matches_botocore(method, token):
    """The List Objects V2 query string (odd prefix, continuation token) and HEAD are signed the
    way botocore signs them."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    reader = S3DirectReader("http://127.0.0.1:5000/bucket-a/", "us-east-1", creds)
    now = datetime.datetime(2026, 12, 7, 20, 30, 5, tzinfo=datetime.UTC)
    params = {"list-type": "2", "prefix": "dir/with space+plus%ü~", "encoding-type": "url"}
    if token:
        params["continuation-token"] = token
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    ours = reader._headers(reader._prefix, now, method=method, query=query)

    request = AWSRequest(method=method, url=f"{reader._origin}{reader._prefix}?{query}")
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    request.headers["X-Amz-Date"] = now.strftime("%Y%m%dT%H%M%SZ")
    request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(creds, "s3", "us-east-1")
    signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert ours["Authorization"].endswith(f"Signature={signature}")


def test_plain_store_lists_heads_and_reads_without_a_client(s3):
    """A store opened with keys and an endpoint lists (page by page), heads and streams ranges
    directly, with the same answers as botocore; the client is made only for the first write."""
    emu = get_emulator("s3")
    seeded = emu.store(s3.bucket, create=False)  # a second store for the writes
    keys = sorted(KEYS + [f"many/{i:02d}.bin" for i in range(7)])
    blobs = {k: random.Random(k).randbytes(1000 + i) for i, k in enumerate(keys)}
    for k, data in blobs.items():
        seeded.write(k, data, metadata={"origin": "test", "n": str(len(data))})

    reader, _ = open_uri(emu.uri(s3.bucket), **emu.options())
    assert reader._client is None and reader._direct is not None
    reader._direct.page_size = 3  # several pages, with continuation tokens
    listed = list(reader.list(""))
    assert reader._client is None
    via_botocore = list(seeded.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket))
    expect = {o["Key"]: o for page in via_botocore for o in page.get("Contents", ())}
    assert [o.key for o in listed] == sorted(expect)
    for o in listed:
        assert o.size == expect[o.key]["Size"] and o.etag == expect[o.key]["ETag"].strip('"')
        assert o.md5 == hashlib.md5(blobs[o.key]).hexdigest()
        assert abs(o.mtime - expect[o.key]["LastModified"].timestamp()) < 1
    assert [o.key for o in reader.list("many/")] == [k for k in keys if k.startswith("many/")]

    for k in (KEYS[1], KEYS[3]):
        got = reader.head(k)
        ref = seeded.client.head_object(Bucket=s3.bucket, Key=k)
        assert got.size == len(blobs[k]) and got.etag == ref["ETag"].strip('"')
        assert got.metadata == {"origin": "test", "n": str(len(blobs[k]))}
        assert abs(got.mtime - ref["LastModified"].timestamp()) < 1
        with reader.open_range(k, 10, 900) as stream:
            buf = bytearray(890)
            n = stream.readinto(buf)
            while n < len(buf):
                n += stream.readinto(memoryview(buf)[n:])
            assert bytes(buf) == blobs[k][10:900] and stream.readinto(bytearray(8)) == 0
    assert reader.head("missing.bin") is None
    with pytest.raises(NotFound):
        reader.open_range("missing.bin", 0, 10)
    assert reader._client is None  # nothing so far needed botocore

    reader.write("new.bin", b"written through botocore")
    assert reader._client is not None and reader.read("new.bin") == b"written through botocore"


def test_plain_listing_of_a_missing_bucket_is_not_found():
    emu = get_emulator("s3")
    gone, _ = open_uri(emu.uri(unique_name("never")), **emu.options())
    with pytest.raises(NotFound) as err:
        list(gone.list(""))
    assert gone.uri() in str(err.value) and gone._client is None


def test_plain_endpoint_only_when_certain(monkeypatch, tmp_path):
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    keys = ("AK", "SK", None)
    base, region, creds = plain_endpoint("bkt", "http://127.0.0.1:9/", "us-east-1", *keys)
    assert (base, region, creds.access_key, creds.token) == (
        "http://127.0.0.1:9/bkt/",
        "us-east-1",
        "AK",
        None,
    )
    assert plain_endpoint("bkt", None, "eu-west-1", *keys)[0] == "https://bkt.s3.eu-west-1.amazonaws.com/"
    assert (
        plain_endpoint("my.dotted", None, "eu-west-1", *keys)[0]
        == "https://s3.eu-west-1.amazonaws.com/my.dotted/"
    )
    assert plain_endpoint("bkt", None, None, *keys) is None  # no region: botocore decides
    assert plain_endpoint("bkt", None, "cn-north-1", *keys) is None  # another partition
    assert plain_endpoint("bkt", None, "us-gov-west-1", *keys) is None
    assert plain_endpoint("bkt", None, "eu-west-1", None, None, None) is None  # the chain is botocore's

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ENVSK")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ENVTOK")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    _, region, creds = plain_endpoint("bkt", None, None, None, None, None)
    assert (region, creds.access_key, creds.secret_key, creds.token) == (
        "eu-west-1",
        "ENVAK",
        "ENVSK",
        "ENVTOK",
    )
    monkeypatch.setenv("AWS_PROFILE", "work")  # a selected profile outranks the variables
    assert plain_endpoint("bkt", None, None, None, None, None) is None
    monkeypatch.delenv("AWS_PROFILE")

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.internal")
    assert plain_endpoint("bkt", None, "eu-west-1", *keys) is None
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    (tmp_path / "config").write_text("[default]\ns3 =\n  addressing_style = path\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    assert plain_endpoint("bkt", None, "eu-west-1", *keys) is None  # config file: botocore reads it
    assert plain_endpoint("bkt", "http://127.0.0.1:9", "us-east-1", *keys) is not None  # explicit wins
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert plain_endpoint("bkt", "https://s3.example.com", "us-east-1", *keys) is None
    monkeypatch.setenv("SKY_S3_DIRECT", "0")
    assert plain_endpoint("bkt", "http://127.0.0.1:9", "us-east-1", *keys) is None


def test_head_answered_400_is_left_to_botocore():
    """A HEAD has no body naming its error; a 400 (what a wrong-region signature gets) goes to
    botocore, which can follow the bucket's region, instead of failing the copy outright."""
    import http.server
    import threading

    from botocore.exceptions import ClientError

    from airflow_provider_sky.storage.s3 import S3Store

    agents: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            agents.append(self.headers.get("User-Agent", ""))
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = S3Store(
            "bkt",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            region_name="us-east-1",
            aws_access_key_id="AK",
            aws_secret_access_key="SK",
        )
        with pytest.raises(ClientError):
            store.head("k.bin")
    finally:
        server.shutdown()
    assert agents and not agents[0].startswith("Botocore")  # the direct HEAD came first ...
    assert any(a.startswith("Botocore") for a in agents[1:])  # ... then botocore's
