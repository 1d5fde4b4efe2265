"""Direct S3 GETs (SigV4 signed here, sent over urllib3) against moto, and their signature
checked against botocore's own signer for the same request and time."""

from __future__ import annotations

import datetime
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
from airflow_provider_sky.storage.s3_direct import S3DirectReader, reader_for
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
    assert s3._direct is None and "reading through botocore from now on" in caplog.text


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
