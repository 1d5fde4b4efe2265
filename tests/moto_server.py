"""moto server (EC2) with capacity-fault injection and ClientToken idempotency, for the AWS tests.

Server side (``python -m tests.moto_server --port N``, started by the fixture as a subprocess): the
stock moto WSGI app wrapped by `FaultMiddleware`, plus two patches of moto's EC2 backend:

* ``ClientToken``: a RunInstances repeated with a token already used in that region returns the
  original reservation (AWS semantics; moto 5.2.5 ignores tokens). Other parameters with the same
  token -> ``IdempotentParameterMismatch``.
* ``fit`` rules: the request is accepted but only ``fit`` instances come up; the others go
  pending -> terminated with ``Server.InsufficientInstanceCapacity`` (a partial launch).

Control endpoints on the same port:
    POST /_fault/rules (JSON rule or list), GET /_fault/rules, DELETE /_fault/rules
    GET /_fault/stats (EC2 actions counted since the last DELETE /_fault/stats)
    POST /_fault/preempt {"region", "instance_ids", "code"?, "message"?}: the cloud reclaims instances
        (terminated with StateReason ``Server.SpotInstanceTermination``, as a spot interruption)

Rule keys, all optional (strings are fnmatch globs): ``action`` (default ``RunInstances``), ``region``,
``az``, ``instance_type``, ``market`` (``spot`` | ``on-demand``), ``times`` (fire N times then expire),
``code`` (default ``InsufficientInstanceCapacity``), ``message``, ``status`` (HTTP status; default per
code as EC2 sends it: 500 for capacity, 503 for throttling, 401 for AuthFailure, else 400), ``fit``.

Client side: the `moto_server` (session) and `moto_ec2` (per test: env + a guard that refuses any
non-loopback request) fixtures and the `MotoEc2` helper.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KEY = "testing"
AMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250101"
DEFAULT_STATUS = {
    "InsufficientInstanceCapacity": 500,
    "InsufficientHostCapacity": 500,
    "RequestLimitExceeded": 503,
    "InternalError": 500,
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
}

# --------------------------------------------------------------------------- server side

RULES: list[dict[str, Any]] = []
STATS: Counter[str] = Counter()
TOKENS: dict[tuple[str, str], tuple[Any, tuple[Any, ...]]] = {}
LOCK = threading.Lock()
_CRED_REGION = re.compile(r"Credential=[^/]+/\d+/([^/]+)/")


def match_rule(action: str, region: str, az: str, instance_type: str, market: str, *, fit: bool) -> dict | None:
    """The first live rule matching the request (and consume one of its `times`)."""
    with LOCK:
        for rule in RULES:
            if ("fit" in rule) != fit or (rule.get("times") is not None and rule["times"] <= 0):
                continue
            wanted = {"action": action, "region": region, "az": az, "instance_type": instance_type}
            defaults = {"action": "RunInstances"}
            if not all(fnmatch.fnmatchcase(v or "", rule.get(k, defaults.get(k, "*"))) for k, v in wanted.items()):
                continue
            if rule.get("market") and rule["market"] != market:
                continue
            if rule.get("times") is not None:
                rule["times"] -= 1
            rule["hits"] = rule.get("hits", 0) + 1
            return dict(rule)
    return None


def _error_response(start_response: Any, code: str, message: str, status: int) -> list[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>fault-injected</RequestID></Response>"
    ).encode()
    start_response(f"{status} Fault", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


class FaultMiddleware:
    """Fault rules, action counters and the control endpoints in front of moto's WSGI app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _control(self, environ: dict, start_response: Any, path: str) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if path == "/_fault/preempt":
            n = int(environ.get("CONTENT_LENGTH") or 0)
            out = json.dumps(preempt(json.loads(environ["wsgi.input"].read(n) or b"{}"))).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
            start_response("200 OK", headers)
            return [out]
        with LOCK:
            if path == "/_fault/rules":
                if method == "POST":
                    n = int(environ.get("CONTENT_LENGTH") or 0)
                    body = json.loads(environ["wsgi.input"].read(n) or b"[]")
                    RULES.extend(body if isinstance(body, list) else [body])
                elif method == "DELETE":
                    RULES.clear()
                out = json.dumps(RULES).encode()
            else:
                if method == "DELETE":
                    STATS.clear()
                out = json.dumps(dict(STATS)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
        return [out]

    def __call__(self, environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "").rstrip("/")
        if path in ("/_fault/rules", "/_fault/stats", "/_fault/preempt"):
            return self._control(environ, start_response, path)
        n = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        form.update({k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()})
        action = form.get("Action")
        if not action:
            return self.app(environ, start_response)
        with LOCK:
            STATS[action] += 1
        found = _CRED_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = found.group(1) if found else "us-east-1"
        token = form.get("ClientToken")
        if action == "RunInstances" and token and (region, token) in TOKENS:
            return self.app(environ, start_response)  # a repeated token returns the original
        az = form.get("Placement.AvailabilityZone") or region + "a"
        market = "spot" if form.get("InstanceMarketOptions.MarketType") == "spot" else "on-demand"
        rule = match_rule(action, region, az, form.get("InstanceType", ""), market, fit=False)
        if rule is None:
            return self.app(environ, start_response)
        code = rule.get("code", "InsufficientInstanceCapacity")
        message = rule.get(
            "message",
            f"We currently do not have sufficient {form.get('InstanceType')} capacity in the Availability "
            f"Zone you requested ({az}). Our system will be working on provisioning additional capacity.",
        )
        return _error_response(start_response, code, message, int(rule.get("status", DEFAULT_STATUS.get(code, 400))))


def preempt(body: dict[str, Any]) -> list[str]:
    """Terminate instances as the cloud would (spot interruption state reason); the ids done."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][body["region"]]
    code = body.get("code", "Server.SpotInstanceTermination")
    message = body.get("message", "Spot instance termination")
    done = []
    for instance_id in body["instance_ids"]:
        instance = backend.get_instance(instance_id)
        instance.terminate()
        instance.state_reason = StateReason(f"{code}: {message}", code)
        done.append(instance_id)
    return done


def install_backend_patches() -> None:
    """ClientToken idempotency and `fit` (partial launch) rules on moto's EC2 backend."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.instances import StateReason

    original = EC2Backend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: Any, **kw: Any):
        token = kw.get("client_token")
        az = kw.get("placement") or self.region_name + "a"
        market = "spot" if kw.get("instance_market_options") == "spot" else "on-demand"
        params = (image_id, count, kw.get("instance_type"), az, market)
        key = (self.region_name, token or "")
        if token and token != "ABCDE":  # moto's placeholder when no token was sent
            with LOCK:
                known = TOKENS.get(key)
            if known is not None:
                if known[1] != params:
                    raise EC2ClientError(
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is already "
                        "created, but the parameters of the request are different.",
                    )
                return known[0]
        reservation = original(self, image_id, count, user_data, security_group_names, **kw)
        rule = match_rule("RunInstances", self.region_name, az, kw.get("instance_type") or "", market, fit=True)
        if rule is not None:
            for instance in reservation.instances[int(rule["fit"]) :]:
                instance.terminate()
                instance.state_reason = StateReason(
                    "Server.InsufficientInstanceCapacity: Insufficient capacity.",
                    "Server.InsufficientInstanceCapacity",
                )
        if token and token != "ABCDE":
            with LOCK:
                TOKENS[key] = (reservation, params)
        return reservation

    EC2Backend.run_instances = run_instances


def serve(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    install_backend_patches()
    app = FaultMiddleware(DomainDispatcherApplication(create_backend_app))
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


# --------------------------------------------------------------------------- client side

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class MotoEc2:
    """A running fault-injecting moto server and helpers to drive it."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="sky-moto-ec2-")) / "moto.log"
        self.proc: subprocess.Popen | None = None
        self._images: set[str] = set()

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.moto_server", "--host", HOST, "--port", str(self.port)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self.proc.returncode}); see {self.log_path}")
            with contextlib.suppress(OSError):
                self._http("GET", "/_fault/rules")
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not come up on {self.endpoint}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def _http(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        with _OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    # faults and counters
    def add_fault(self, **rule: Any) -> None:
        self._http("POST", "/_fault/rules", rule)

    def rules(self) -> list[dict[str, Any]]:
        return self._http("GET", "/_fault/rules")

    def clear_faults(self) -> None:
        self._http("DELETE", "/_fault/rules")

    def stats(self) -> dict[str, int]:
        return self._http("GET", "/_fault/stats")

    def reset_stats(self) -> None:
        self._http("DELETE", "/_fault/stats")

    def preempt(self, region: str, instance_ids: list[str], **reason: str) -> list[str]:
        """Reclaim instances like a spot interruption (terminated, ``Server.SpotInstanceTermination``)."""
        body = {"region": region, "instance_ids": instance_ids, **reason}
        return self._http("POST", "/_fault/preempt", body)

    # boto3 helpers
    def client(self, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )

    def ensure_image(self, region: str, name: str = AMI_NAME) -> str:
        """Register (once per region) an AMI that the default-image lookup finds; return its id."""
        ec2 = self.client(region)
        found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        if found:
            return found[0]["ImageId"]
        # moto's RegisterImage drops the architecture; an image made from an instance keeps it.
        base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}])
        seed = ec2.run_instances(ImageId=base["Images"][0]["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
        image_id = ec2.create_image(InstanceId=seed["InstanceId"], Name=name)["ImageId"]
        ec2.terminate_instances(InstanceIds=[seed["InstanceId"]])
        return image_id

    def cloud(self, key_dir: Path, regions: tuple[str, ...] = ("us-east-1", "us-west-2"), **kw: Any) -> Any:
        """An `AwsCloud` aimed at this server (explicit loopback endpoint, dummy keys, fast polling)."""
        from airflow_provider_sky.clouds.aws import AwsCloud

        for region in regions:
            self.ensure_image(region)
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "regions": regions,
            "default_region": regions[0],
            "image_owners": ("self",),
            "key_dir": key_dir,
            "poll_interval": 0.05,
            "launch_timeout": 15,
            **kw,
        }
        session = {"aws_access_key_id": KEY, "aws_secret_access_key": KEY}
        return AwsCloud(session, **options)

    def live_instances(self, cluster_name: str, regions: tuple[str, ...]) -> list[dict[str, Any]]:
        """Instances of the cluster (by tag) that are not terminated, in any of `regions`."""
        out = []
        for region in regions:
            reply = self.client(region).describe_instances(
                Filters=[
                    {"Name": "tag:sky-cluster", "Values": [cluster_name]},
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
                ]
            )
            out += [i for r in reply["Reservations"] for i in r["Instances"]]
        return out


def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any botocore request to a non-loopback host fail the test instead of reaching AWS."""
    from botocore.httpsession import URLLib3Session

    original = URLLib3Session.send

    def send(self: Any, request: Any) -> Any:
        host = urlsplit(request.url).hostname
        if host not in (HOST, "localhost"):
            raise AssertionError(f"test tried to reach {request.url}; only {HOST} is allowed")
        return original(self, request)

    monkeypatch.setattr(URLLib3Session, "send", send)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEc2]:
    """One fault-injecting moto server per test process."""
    import importlib.util

    from tests.services import require

    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed (pip install -e '.[test]')")
    server = MotoEc2()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_ec2(moto_server: MotoEc2, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoEc2]:
    """The server with clean fault rules, dummy credentials, loopback endpoint and the loopback guard."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _loopback_only(monkeypatch)
    assert urlsplit(moto_server.endpoint).hostname == HOST
    moto_server.clear_faults()
    try:
        yield moto_server
    finally:
        moto_server.clear_faults()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    if args.host not in (HOST, "localhost"):
        raise SystemExit("moto_server: loopback only")
    serve(args.host, args.port)
