"""A protocol fake of the Compute Engine REST API v1 on 127.0.0.1, with fault injection.

No GCE emulator exists, so `GcpCloud` is tested against this server through the official
``google-cloud-compute`` client (REST transport, ``client_options.api_endpoint``). It answers the
calls the cloud module makes with GCE's wire format (camelCase JSON, zonal operations, aggregated
lists, ``requestId`` de-duplication, the real error payloads):

    GET    /compute/v1/projects/P/regions[/R]
    POST   /compute/v1/projects/P/zones/Z/instances?requestId=    -> Operation (RUNNING)
    GET    /compute/v1/projects/P/zones/Z/instances[/N][?filter=]
    DELETE /compute/v1/projects/P/zones/Z/instances/N             -> Operation
    POST   /compute/v1/projects/P/zones/Z/instances/N/stop|start   -> Operation
    GET    /compute/v1/projects/P/aggregated/instances[?filter=]
    GET    /compute/v1/projects/P/zones/Z/operations/O   (POST .../wait too): DONE after `op_polls` reads
    POST   /compute/v1/projects/P/global/firewalls                -> global Operation (409 alreadyExists)
    GET    /compute/v1/projects/P/global/firewalls[/N]            (404 notFound)
    DELETE /compute/v1/projects/P/global/firewalls/N              -> global Operation (404 notFound)
    GET    /compute/v1/projects/P/global/operations/O             DONE after `op_polls` reads

Names and network tags (instance ``tags.items``, firewall ``targetTags``) are validated as GCE does
(RFC 1035, 400 ``invalid``); a firewall's network must exist (only ``default`` does). A firewall
insert or delete takes effect when its operation completes, as on GCE.

Fault rules (`add_fault`), all keys optional, strings are fnmatch globs: ``method`` (default
``insert``; ``*`` = every call), ``zone``, ``region``, ``machine_type``, ``spot`` (bool), ``times``
(fire N times), ``code`` (default ``ZONE_RESOURCE_POOL_EXHAUSTED``), ``message``, ``metric`` (quota
metric, default ``GPUS_ALL_REGIONS``), ``fit`` (the first ``fit`` matching inserts succeed, the rest
fail with a stockout: partial launches). Operation-style codes (stockouts, ``QUOTA_EXCEEDED``) fail
the operation; the others (``forbidden``, ``quotaExceeded``, ``rateLimitExceeded``, ``unauthorized``,
``invalid``, ``accessNotConfigured``, ``backendError``) fail the HTTP call itself. Firewall calls are
matched as ``firewalls.insert`` / ``firewalls.get`` / ``firewalls.delete`` (e.g. ``method=
"firewalls.insert", code="forbidden"`` or ``code="quotaExceeded", metric="FIREWALLS"``).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fake_cloud_common import FakeServer, JsonHandler, guarded, serve_for_session

PROJECT = "sky-test-project"
REGIONS = {
    "us-central1": ("us-central1-a", "us-central1-b", "us-central1-c"),
    "us-east1": ("us-east1-b", "us-east1-c", "us-east1-d"),
    "europe-west4": ("europe-west4-a", "europe-west4-b"),
}
OPERATION_CODES = {  # code -> httpErrorStatusCode of the failed operation
    "ZONE_RESOURCE_POOL_EXHAUSTED": 503,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": 503,
    "QUOTA_EXCEEDED": 403,
}
SYNC_CODES = {  # reason -> (HTTP status, google.rpc status, domain)
    "forbidden": (403, "PERMISSION_DENIED", "global"),
    "unauthorized": (401, "UNAUTHENTICATED", "global"),
    "quotaExceeded": (403, "PERMISSION_DENIED", "usageLimits"),
    "rateLimitExceeded": (403, "PERMISSION_DENIED", "usageLimits"),
    "accessNotConfigured": (403, "PERMISSION_DENIED", "usageLimits"),
    "invalid": (400, "INVALID_ARGUMENT", "global"),
    "backendError": (503, "UNAVAILABLE", "global"),
}
NETWORKS = ("default",)
_NAME = re.compile(r"^(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)$")
_TERM = re.compile(r"([\w.-]+)\s*(=|!=|eq|ne)\s*\"?([^\")\s]*)\"?")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-07:00")


def quota_error(metric: str, region: str) -> dict[str, Any]:
    """A ``QUOTA_EXCEEDED`` operation error exactly as GCE words it (global or regional metric)."""
    is_global = metric.endswith("_ALL_REGIONS")
    where = "globally" if is_global else f"in region {region}"
    info: dict[str, Any] = {
        "metricName": f"compute.googleapis.com/{metric.lower()}",
        "limitName": f"{metric.replace('_', '-')}-per-project" + ("" if is_global else "-region"),
        "limit": 0,
    }
    if not is_global:
        info["dimensions"] = {"region": region}
    return {
        "code": "QUOTA_EXCEEDED",
        "message": f"Quota '{metric}' exceeded.  Limit: 0.0 {where}.",
        "errorDetails": [
            {"quotaInfo": info},
            {"help": {"links": [{"description": "Request a higher quota limit.",
                                 "url": "https://cloud.google.com/compute/quotas#requesting_additional_quota"}]}},
        ],
    }  # fmt: skip


def operation_error(code: str, message: str | None, zone: str, machine_type: str, metric: str) -> dict[str, Any]:
    if code == "QUOTA_EXCEEDED":
        return quota_error(metric, zone.rsplit("-", 1)[0])
    text = message or (
        f"The zone 'projects/{PROJECT}/zones/{zone}' does not have enough resources available to fulfill "
        "the request.  Try a different zone, or try again later."
    )
    error: dict[str, Any] = {"code": code, "message": text}
    if code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS":
        error["message"] = message or (
            f"The zone 'projects/{PROJECT}/zones/{zone}' does not have enough resources available to fulfill "
            "the request.  '(resource type:compute)'."
        )
        error["errorDetails"] = [
            {"errorInfo": {"reason": "resource_availability", "domain": "compute.googleapis.com",
                           "metadatas": {"zone": zone, "vmType": machine_type}}},
            {"help": {"links": [{"description": "Troubleshooting documentation",
                                 "url": "https://cloud.google.com/compute/docs/resource-error"}]}},
        ]  # fmt: skip
    return error


def sync_error(reason: str, message: str | None, path: str, metric: str) -> tuple[int, dict[str, Any]]:
    status, rpc, domain = SYNC_CODES.get(reason, (400, "INVALID_ARGUMENT", "global"))
    kind = "firewalls" if "/firewalls" in path else "instances"
    default = {
        "forbidden": f"Required 'compute.{kind}.create' permission for '{path}'",
        "unauthorized": "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
        "quotaExceeded": f"Quota '{metric}' exceeded.  Limit: 0.0 globally.",
        "rateLimitExceeded": "Rate Limit Exceeded",
        "accessNotConfigured": f"Compute Engine API has not been used in project {PROJECT} before or it is "
        "disabled. Enable it by visiting https://console.developers.google.com/apis/api/compute.googleapis.com",
        "backendError": "Internal error. Please try again or contact Google Support.",
        "invalid": "Invalid value for field 'resource.machineType'.",
    }.get(reason, reason)
    text = message or default
    return status, {
        "error": {
            "code": status,
            "message": text,
            "errors": [{"message": text, "domain": domain, "reason": reason}],
            "status": rpc,
        }
    }


def _matches(instance: dict[str, Any], expr: str | None) -> bool:
    """The subset of GCE's filter syntax the cloud module uses: ANDed ``field = "value"`` terms."""
    for field, op, value in _TERM.findall(expr or ""):
        if field.startswith("labels."):
            actual = (instance.get("labels") or {}).get(field[7:])
        else:
            actual = instance.get(field)
        equal = actual == value
        if equal != (op in ("=", "eq")):
            return False
    return True


class FakeGce(FakeServer):
    """State, faults and the HTTP server; thread-safe."""

    def __init__(self, project: str = PROJECT, op_polls: int = 2) -> None:
        super().__init__()
        self.project = project
        self.op_polls = op_polls
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # op name -> what happens when it completes
        self.request_ids: dict[str, str] = {}
        self.created: Counter[str] = Counter()  # instance inserts that created an instance, per cluster
        self._ids = itertools.count(1000)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeGce:
        fake = self

        class Handler(JsonHandler):
            def _handle(self, method: str) -> None:
                status, payload = fake.handle(method, self.path, self.read_json())
                self.send_json(status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=UTF-8"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._serve(Handler)
        return self

    # ---- test helpers -------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self.lock:
            super().reset_stats()
            self.created.clear()

    def live(self, cluster_name: str) -> list[dict[str, Any]]:
        """Instances labelled with the cluster, in any zone (what a leak check looks at)."""
        with self.lock:
            return [dict(i) for i in self.instances.values() if i["labels"].get("sky-cluster") == cluster_name]

    def firewall(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            rule = self.firewalls.get(name)
            return json.loads(json.dumps(rule)) if rule else None

    def purge(self, cluster_name: str) -> None:
        with self.lock:
            for key in [k for k, i in self.instances.items() if i["labels"].get("sky-cluster") == cluster_name]:
                del self.instances[key]

    # ---- faults -------------------------------------------------------------------------------
    def _fault(self, method: str, zone: str, machine_type: str = "", spot: bool | None = None) -> dict | None:
        checks = {"zone": zone, "region": zone.rsplit("-", 1)[0] if zone else "", "machine_type": machine_type}

        def matches(rule: dict[str, Any]) -> bool:
            if not fnmatch.fnmatchcase(method, rule.get("method", "insert")) and rule.get("method") != "*":
                return False
            return all(fnmatch.fnmatchcase(v, rule.get(k, "*")) for k, v in checks.items())

        return self._first_fault(matches, spot)

    # ---- dispatch -----------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if parts[:3] != ["compute", "v1", "projects"] or len(parts) < 5 - (parts[-1] == "regions"):
            return self._not_found(url.path)
        project, rest = parts[3], parts[4:]
        if project != self.project:
            return sync_error("forbidden", f"Permission denied on resource project {project}.", url.path, "")
        zone = rest[1] if rest[0] == "zones" and len(rest) > 1 else ""
        name = {("GET", 1): "regions.list", ("GET", 2): "regions.get"}.get((method, len(rest))) if rest[0] == "regions" else None
        if rest[0] == "aggregated":
            name = "aggregatedList"
        elif rest[:2] == ["global", "operations"] and len(rest) == 3 and method in ("GET", "POST"):
            name = "globalOperations.get"
        elif rest[:2] == ["global", "firewalls"]:
            name = {("POST", 2): "firewalls.insert", ("GET", 2): "firewalls.list", ("GET", 3): "firewalls.get",
                    ("DELETE", 3): "firewalls.delete"}.get((method, len(rest)))  # fmt: skip
        elif rest[0] == "zones" and len(rest) >= 3 and rest[2] == "operations":
            name = "operations.get"
        elif rest[0] == "zones" and len(rest) >= 3 and rest[2] == "instances":
            name = {
                ("POST", 3): "insert",
                ("GET", 3): "list",
                ("GET", 4): "get",
                ("DELETE", 4): "delete",
                ("POST", 5): rest[-1],
            }.get((method, len(rest)))
        if name is None:
            return self._not_found(url.path)
        with self.lock:
            self.calls[name] += 1
        if name != "insert":
            rule = self._fault(name, zone)
            if rule is not None and rule.get("method", "insert") != "insert":
                return sync_error(rule.get("code", "forbidden"), rule.get("message"), url.path, rule.get("metric", ""))
        with self.lock:
            if name == "regions.get":
                return self._region(rest[1])
            if name == "regions.list":
                return 200, {"kind": "compute#regionList", "items": [self._region(r)[1] for r in REGIONS]}
            if name == "aggregatedList":
                return self._aggregated(query.get("filter"))
            if name == "operations.get":
                return self._operation(rest[3])
            if name == "globalOperations.get":
                return self._operation(rest[2])
            if name.startswith("firewalls."):
                return self._firewalls(name, rest[2] if len(rest) > 2 else "", body, url.path)
            if name == "insert":
                return self._insert(zone, body, query.get("requestId"), url.path)
            if name == "list":
                items = [i for (z, _), i in self.instances.items() if z == zone and _matches(i, query.get("filter"))]
                return 200, {"kind": "compute#instanceList", "items": items, "id": f"projects/{project}/zones/{zone}/instances"}
            instance = self.instances.get((zone, rest[3]))
            if instance is None:
                return self._not_found(f"projects/{project}/zones/{zone}/instances/{rest[3]}")
            if name == "get":
                return 200, instance
            if name == "delete":
                instance["status"] = "STOPPING"
                return 200, self._new_op(zone, "delete", instance, {"delete": True})
            if name in ("stop", "start"):
                instance["status"] = "STOPPING" if name == "stop" else "STAGING"
                final = "TERMINATED" if name == "stop" else "RUNNING"
                return 200, self._new_op(zone, name, instance, {"status": final})
        return self._not_found(url.path)

    def _invalid(self, field: str, value: Any) -> tuple[int, dict[str, Any]]:
        text = (f"Invalid value for field '{field}': '{value}'. Must be a match of regex "
                "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")  # fmt: skip
        return sync_error("invalid", text, "", "")

    def _firewalls(self, name: str, rule_name: str, body: dict[str, Any], path: str) -> tuple[int, dict[str, Any]]:
        if name == "firewalls.list":
            return 200, {"kind": "compute#firewallList", "items": list(self.firewalls.values()),
                         "id": f"projects/{self.project}/global/firewalls"}  # fmt: skip
        if name == "firewalls.insert":
            rule_name = body.get("name", "")
            if not _NAME.match(rule_name):
                return self._invalid("resource.name", rule_name)
            for i, tag in enumerate(body.get("targetTags") or ()):
                if not _NAME.match(tag):
                    return self._invalid(f"resource.targetTags[{i}]", tag)
            if not body.get("allowed") and not body.get("denied"):
                return sync_error("invalid", "Invalid value for field 'resource.allowed': ''. Firewall rule "
                                  "must have at least one allowed or denied entry.", path, "")  # fmt: skip
            network = (body.get("network") or "global/networks/default").rsplit("/", 1)[-1]
            if network not in NETWORKS:
                return self._not_found(f"projects/{self.project}/global/networks/{network}")
            if rule_name in self.firewalls:
                text = f"The resource 'projects/{self.project}/global/firewalls/{rule_name}' already exists"
                return 409, {"error": {"code": 409, "message": text,
                                       "errors": [{"message": text, "domain": "global", "reason": "alreadyExists"}]}}  # fmt: skip
            rule = {
                "kind": "compute#firewall", "id": str(next(self._ids) * 7919), "creationTimestamp": _now(),
                "name": rule_name, "description": body.get("description", ""),
                "network": f"{self._base()}/global/networks/{network}", "priority": body.get("priority", 1000),
                "sourceRanges": body.get("sourceRanges") or (["0.0.0.0/0"] if not body.get("sourceTags") else []),
                "targetTags": body.get("targetTags") or [], "allowed": body.get("allowed") or [],
                "denied": body.get("denied") or [], "direction": body.get("direction", "INGRESS"),
                "logConfig": {"enable": False}, "disabled": bool(body.get("disabled", False)),
                "selfLink": f"{self._base()}/global/firewalls/{rule_name}",
            }  # fmt: skip
            rule = {k: v for k, v in rule.items() if v != []}
            return 200, self._new_global_op("insert", rule["selfLink"], {"firewall": rule_name, "create": rule})
        rule = self.firewalls.get(rule_name)
        if rule is None:
            return self._not_found(f"projects/{self.project}/global/firewalls/{rule_name}")
        if name == "firewalls.get":
            return 200, rule
        return 200, self._new_global_op("delete", rule["selfLink"], {"firewall": rule_name, "delete": True})

    def _new_global_op(self, kind: str, target: str, effect: dict[str, Any]) -> dict[str, Any]:
        op_id = next(self._ids)
        name = f"operation-{int(time.time() * 1000)}-{op_id:x}"
        op = {
            "kind": "compute#operation", "id": str(op_id), "name": name, "operationType": kind,
            "targetLink": target, "targetId": str(op_id * 7), "status": "RUNNING",
            "user": "sky-test@sky-test-project.iam.gserviceaccount.com", "progress": 0,
            "insertTime": _now(), "startTime": _now(), "selfLink": f"{self._base()}/global/operations/{name}",
        }  # fmt: skip
        self.operations[name] = op
        self.pending[name] = {"reads": 0, "key": None, **effect}
        return dict(op)

    def _not_found(self, what: str) -> tuple[int, dict[str, Any]]:
        text = f"The resource '{what}' was not found"
        return 404, {"error": {"code": 404, "message": text,
                               "errors": [{"message": text, "domain": "global", "reason": "notFound"}]}}  # fmt: skip

    def _base(self) -> str:
        return f"https://compute.googleapis.com/compute/v1/projects/{self.project}"

    def _region(self, region: str) -> tuple[int, dict[str, Any]]:
        if region not in REGIONS:
            return self._not_found(f"projects/{self.project}/regions/{region}")
        zones = [f"{self._base()}/zones/{z}" for z in REGIONS[region]]
        return 200, {"kind": "compute#region", "name": region, "status": "UP", "zones": zones,
                     "selfLink": f"{self._base()}/regions/{region}"}  # fmt: skip

    def _aggregated(self, expr: str | None) -> tuple[int, dict[str, Any]]:
        items: dict[str, Any] = {}
        for zone in itertools.chain.from_iterable(REGIONS.values()):
            found = [i for (z, _), i in self.instances.items() if z == zone and _matches(i, expr)]
            if found:
                items[f"zones/{zone}"] = {"instances": found}
            else:
                items[f"zones/{zone}"] = {"warning": {"code": "NO_RESULTS_ON_PAGE",
                                                      "message": f"There are no results for scope 'zones/{zone}' on this page."}}  # fmt: skip
        return 200, {"kind": "compute#instanceAggregatedList", "items": items, "id": f"projects/{self.project}/aggregated/instances"}

    def _new_op(self, zone: str, kind: str, instance: dict[str, Any] | None, effect: dict[str, Any],
                target: str = "") -> dict[str, Any]:  # fmt: skip
        op_id = next(self._ids)
        name = f"operation-{int(time.time() * 1000)}-{op_id:x}"
        link = instance["selfLink"] if instance else target
        op = {
            "kind": "compute#operation",
            "id": str(op_id),
            "name": name,
            "zone": f"{self._base()}/zones/{zone}",
            "operationType": kind,
            "targetLink": link,
            "targetId": instance["id"] if instance else "",
            "status": "RUNNING",
            "user": "sky-test@sky-test-project.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": _now(),
            "startTime": _now(),
            "selfLink": f"{self._base()}/zones/{zone}/operations/{name}",
        }
        self.operations[name] = op
        self.pending[name] = {"reads": 0, "key": (zone, link.rsplit("/", 1)[-1]), **effect}
        return dict(op)

    def _operation(self, name: str) -> tuple[int, dict[str, Any]]:
        op = self.operations.get(name)
        if op is None:
            return self._not_found(f"projects/{self.project}/zones/-/operations/{name}")
        effect = self.pending.get(name)
        if effect is not None:
            effect["reads"] += 1
            if effect["reads"] >= self.op_polls:
                self._complete(op, self.pending.pop(name))
        return 200, dict(op)

    def _complete(self, op: dict[str, Any], effect: dict[str, Any]) -> None:
        key = effect["key"]
        op.update(status="DONE", progress=100, endTime=_now())
        if "firewall" in effect:
            if effect.get("delete"):
                self.firewalls.pop(effect["firewall"], None)
            else:
                self.firewalls[effect["firewall"]] = effect["create"]
            return
        if "error" in effect:
            self.instances.pop(key, None)  # a create that failed leaves no instance behind
            op["error"] = {"errors": [effect["error"]]}
            op["httpErrorStatusCode"] = effect["http"]
            op["httpErrorMessage"] = "SERVICE UNAVAILABLE" if effect["http"] == 503 else "FORBIDDEN"
        elif effect.get("delete"):
            self.instances.pop(key, None)
        elif key in self.instances:
            self.instances[key]["status"] = effect["status"]

    def _insert(self, zone: str, body: dict[str, Any], request_id: str | None, path: str) -> tuple[int, dict[str, Any]]:
        if request_id and request_id in self.request_ids:
            return 200, dict(self.operations[self.request_ids[request_id]])
        region = zone.rsplit("-", 1)[0]
        if region not in REGIONS or zone not in REGIONS[region]:
            return sync_error("invalid", f"Invalid value for field 'zone': '{zone}'. Unknown zone.", path, "")
        machine_type = body.get("machineType", "").rsplit("/", 1)[-1]
        spot = (body.get("scheduling") or {}).get("provisioningModel") == "SPOT"
        name = body.get("name", "")
        for i, tag in enumerate((body.get("tags") or {}).get("items") or ()):
            if not _NAME.match(tag):
                return self._invalid(f"resource.tags.items[{i}]", tag)
        rule = self._fault("insert", zone, machine_type, spot)
        if rule is not None and "fit" in rule:
            rule = {**rule, "code": rule.get("code", "ZONE_RESOURCE_POOL_EXHAUSTED")}
        code = (rule or {}).get("code", "ZONE_RESOURCE_POOL_EXHAUSTED")
        if rule is not None and code not in OPERATION_CODES:
            return sync_error(code, rule.get("message"), f"projects/{self.project}/zones/{zone}/instances/{name}",
                              rule.get("metric", "GPUS_ALL_REGIONS"))  # fmt: skip
        if (zone, name) in self.instances:
            text = f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists"
            return 409, {"error": {"code": 409, "message": text,
                                   "errors": [{"message": text, "domain": "global", "reason": "alreadyExists"}]}}  # fmt: skip
        instance_id = str(next(self._ids) * 7919)
        n = len(self.instances) + 2
        interfaces = []
        for nic in body.get("networkInterfaces") or [{}]:
            out = {**nic, "name": "nic0", "networkIP": f"10.128.{n // 250}.{n % 250}"}
            out["accessConfigs"] = [{**a, "natIP": f"34.{n // 250}.{n % 250}.{n % 7 + 1}"} for a in nic.get("accessConfigs") or ()]
            interfaces.append(out)
        instance = {
            **body,
            "kind": "compute#instance",
            "id": instance_id,
            "creationTimestamp": _now(),
            "zone": f"{self._base()}/zones/{zone}",
            "machineType": f"{self._base()}/zones/{zone}/machineTypes/{machine_type}",
            "status": "PROVISIONING",
            "networkInterfaces": interfaces,
            "labels": body.get("labels") or {},
            "selfLink": f"{self._base()}/zones/{zone}/instances/{name}",
        }
        self.instances[(zone, name)] = instance
        effect: dict[str, Any] = {"status": "RUNNING"}
        if rule is not None:
            effect = {"error": operation_error(code, rule.get("message"), zone, machine_type,
                                               rule.get("metric", "GPUS_ALL_REGIONS")), "http": OPERATION_CODES[code]}  # fmt: skip
        else:
            self.created[instance["labels"].get("sky-cluster", "")] += 1
        op = self._new_op(zone, "insert", instance, effect)
        if request_id:
            self.request_ids[request_id] = op["name"]
        return 200, op


@pytest.fixture(scope="session")
def fake_gce_server() -> Iterator[FakeGce]:
    yield from serve_for_session(("google.cloud.compute_v1",),
                                 "google-cloud-compute is not installed (pip install -e '.[gcp]')", FakeGce().start)  # fmt: skip


@pytest.fixture
def fake_gce(fake_gce_server: FakeGce, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[FakeGce]:
    """The fake with clean faults and stats, no ambient Google credentials, and the loopback guard."""
    env = {"GOOGLE_APPLICATION_CREDENTIALS": None, "GOOGLE_CLOUD_PROJECT": None, "CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud")}
    yield from guarded(fake_gce_server, monkeypatch, env)
