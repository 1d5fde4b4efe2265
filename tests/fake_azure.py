"""A protocol fake of Azure Resource Manager (Compute + Network + Resources) on 127.0.0.1 over TLS.

No Azure emulator exists, so `AzureCloud` is tested against this server through the official SDKs
(azure-mgmt-compute / -network / -resource with ``base_url=`` and a static token). It speaks ARM's
wire format: ``properties`` envelopes, long-running PUT/DELETE/POST answered 201/202 with an
``Azure-AsyncOperation`` header whose status document goes InProgress -> Succeeded | Failed after
`op_polls` reads, idempotent PUT, 204 on deleting a missing resource, the real error payloads
(``{"error": {"code", "message"}}``). A VM whose allocation fails stays behind in provisioning state
``Failed``, as on Azure; deleting a VM deletes its NICs / public IPs / OS disk marked ``deleteOption:
Delete``. A created VM gets a managed OS disk (``Microsoft.Compute/disks``, named by ``osDisk.name``,
untagged as on Azure). NSG ``securityRules`` are a child resource (PUT/GET/DELETE, long-running; a
second inbound rule at a taken priority is refused with 400 ``SecurityRuleConflict``); a PUT of the
NSG replaces its rule list, as on Azure. Resource groups: PUT, GET, HEAD, ``.../resources`` (list),
DELETE (202 + ``Location`` polled at ``/operationresults``; deletes everything in the group; a PUT
meanwhile gets 409 ``ResourceGroupBeingDeleted``).

Fault rules (`add_fault`), keys optional, strings are fnmatch globs: ``method`` (PUT, DELETE, GET,
POST or ``*``; default PUT), ``kind`` (resource type, default ``virtualMachines``; ``*`` = any),
``location``, ``zone`` ("1"...), ``size``, ``spot`` (bool), ``times``, ``code`` (default
``AllocationFailed``), ``message``, ``fit`` (the first ``fit`` matching VM creates succeed, the rest
fail allocation: partial launches). ``AllocationFailed`` / ``ZonalAllocationFailed`` /
``Overconstrained*`` fail the async operation; everything else fails the request itself.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import itertools
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fake_cloud_common import HOST, FakeServer, JsonHandler, guarded, serve_for_session

SUBSCRIPTION = "00000000-0000-0000-0000-00000000a2ae"
ASYNC_CODES = {"AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
               "OverconstrainedZonalAllocationRequest"}  # fmt: skip
SYNC_STATUS = {
    "SkuNotAvailable": 409,
    "OperationNotAllowed": 409,
    "QuotaExceeded": 409,
    "AuthorizationFailed": 403,
    "InvalidAuthenticationTokenTenant": 401,
    "ExpiredAuthenticationToken": 401,
    "MissingSubscriptionRegistration": 409,
    "InvalidParameter": 400,
    "TooManyRequests": 429,
    "InternalServerError": 500,
}
PROVIDERS = {"virtualmachines": "Microsoft.Compute", "virtualnetworks": "Microsoft.Network",
             "networksecuritygroups": "Microsoft.Network", "publicipaddresses": "Microsoft.Network",
             "networkinterfaces": "Microsoft.Network", "disks": "Microsoft.Compute"}  # fmt: skip
TYPES = {k: k for k in ("virtualMachines", "virtualNetworks", "networkSecurityGroups", "publicIPAddresses",
                        "networkInterfaces", "disks")}  # fmt: skip
TYPES_BY_LOWER = {k.lower(): k for k in TYPES}


def error_message(code: str, *, location: str, zone: str, size: str, scope: str, spot: bool) -> str:
    """Azure's wording for each error code."""
    parts = size.split("_")
    series = "".join(c for c in parts[1] if not c.isdigit()).upper() if len(parts) > 1 else "D"
    family = "LowPriorityCores" if spot else f"standard{series}{''.join(parts[2:])}Family Cores"
    return {
        "SkuNotAvailable": f"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
        f"{size}' is currently not available in location '{location}'. Please try another size or deploy to a "
        "different location or zones. See https://aka.ms/azureskunotavailable for details.",
        "AllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in this "
        "region. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance",
        "ZonalAllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in "
        "this zone. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance",
        "OverconstrainedAllocationRequest": "Allocation failed. VM(s) with the following constraints cannot be "
        "allocated, because the condition is too restrictive. Please remove some constraints and try again.",
        "OperationNotAllowed": f"Operation could not be completed as it results in exceeding approved {family} quota. "
        f"Additional details - Deployment Model: Resource Manager, Location: {location}, Current Limit: 0, Current "
        "Usage: 0, Additional Required: 24, (Minimum) New Limit Required: 24. Submit a request for Quota increase at "
        "https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView by specifying "
        "parameters listed in the 'Details' section for deployment to succeed.",
        "QuotaExceeded": f"Operation could not be completed as it results in exceeding approved Total Regional Cores "
        f"quota. Location: {location}, Current Limit: 0, Current Usage: 0, Additional Required: 8.",
        "AuthorizationFailed": "The client 'f0e1d2c3-0000-0000-0000-000000000001' with object id "
        "'f0e1d2c3-0000-0000-0000-000000000001' does not have authorization to perform action "
        f"'Microsoft.Compute/virtualMachines/write' over scope '{scope}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials.",
        "InvalidAuthenticationTokenTenant": "The access token is from the wrong issuer "
        "'https://sts.windows.net/00000000-0000-0000-0000-000000000000/'.",
        "ExpiredAuthenticationToken": "The access token expiry UTC time is earlier than current UTC time.",
        "MissingSubscriptionRegistration": "The subscription is not registered to use namespace 'Microsoft.Compute'. "
        "See https://aka.ms/rps-not-found for how to register subscriptions.",
        "TooManyRequests": "The request is being throttled as the limit has been reached for operation type - Write_30Min.",
        "InternalServerError": "An internal execution error occurred. Please retry later.",
    }.get(code, code)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the CA file clients pass as `connection_verify`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake-arm.pem", directory / "fake-arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


class FakeArm(FakeServer):
    """State, faults and the HTTPS server; thread-safe."""

    scheme = "https"

    def __init__(self, subscription: str = SUBSCRIPTION, op_polls: int = 2) -> None:
        super().__init__()
        self.subscription = subscription
        self.op_polls = op_polls
        self.groups: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}  # lower-cased id -> resource
        self.operations: dict[str, dict[str, Any]] = {}
        self._ips = itertools.count(4)
        self.ca_file: Path | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, cert_dir: Path) -> FakeArm:
        fake = self
        self.ca_file, key_file = make_cert(cert_dir)

        class Handler(JsonHandler):
            def _handle(self) -> None:
                status, payload, headers = fake.handle(self.command, self.path, self.read_json())
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_json(status, data, {"Content-Type": "application/json; charset=utf-8",
                                              "x-ms-request-id": str(uuid.uuid4()), **headers})  # fmt: skip

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _handle

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._serve(Handler, context)
        return self

    # ---- test helpers -------------------------------------------------------------------------
    def _of(self, kind: str, cluster_name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.resources.values()
                    if r["type"].endswith(kind) and (r.get("tags") or {}).get("sky-cluster") == cluster_name]  # fmt: skip

    def live(self, cluster_name: str) -> list[dict[str, Any]]:
        """VMs, NICs and public IPs tagged with the cluster (what a leak check looks at)."""
        return [r for kind in ("/virtualMachines", "/networkInterfaces", "/publicIPAddresses")
                for r in self._of(kind, cluster_name)]  # fmt: skip

    def in_groups(self, prefix: str) -> dict[str, list[str]]:
        """Resource groups named `prefix`* and the ids of what they hold (a whole-leak check)."""
        with self.lock:
            out: dict[str, list[str]] = {}
            for key, group in self.groups.items():
                if key.startswith(prefix.lower()):
                    start = f"{group['id']}/".lower()
                    out[group["name"]] = sorted(r["id"] for k, r in self.resources.items() if k.startswith(start))
            return out

    def disks(self, group: str) -> list[str]:
        with self.lock:
            start = f"/subscriptions/{self.subscription}/resourcegroups/{group.lower()}/"
            return [r["name"] for k, r in self.resources.items() if k.startswith(start) and r["type"].endswith("/disks")]

    def vms(self, cluster_name: str) -> list[dict[str, Any]]:
        return self._of("/virtualMachines", cluster_name)

    def purge(self, cluster_name: str) -> None:
        with self.lock:
            for key in [k for k, r in self.resources.items() if (r.get("tags") or {}).get("sky-cluster") == cluster_name]:
                del self.resources[key]

    # ---- faults -------------------------------------------------------------------------------
    def _fault(self, method: str, kind: str, location: str, zone: str, size: str, spot: bool | None) -> dict | None:
        checks = {"method": method, "kind": kind, "location": location, "zone": zone, "size": size}
        defaults = {"method": "PUT", "kind": "virtualMachines"}
        return self._first_fault(
            lambda rule: all(fnmatch.fnmatchcase(v, rule.get(k, defaults.get(k, "*"))) for k, v in checks.items()), spot
        )

    # ---- dispatch -----------------------------------------------------------------------------
    def handle(self, method: str, raw: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(raw)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        low = [p.lower() for p in parts]
        if low[:1] != ["subscriptions"] or len(parts) < 2:
            return self._error(404, "InvalidResourceType", f"The resource type could not be found: {url.path}")
        if parts[1] != self.subscription:
            return self._error(404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found.")
        with self.lock:
            if low[2:3] == ["operationresults"]:
                self.calls["operationResults.get"] += 1
                return self._operation_result(parts[3])
            if low[2:3] == ["providers"] and "operations" in low:
                self.calls["operations.get"] += 1
                return self._operation(parts[-1])
            if low[2:3] == ["providers"] and low[-1] == "virtualmachines":
                self.calls["virtualMachines.listAll"] += 1
                return 200, {"value": self._list(None, query)}, {}
            if low[2:3] != ["resourcegroups"] or len(parts) < 4:
                return self._error(404, "InvalidResourceType", f"The resource type could not be found: {url.path}")
            group = parts[3]
            if len(parts) == 4:
                return self._group(method, group, body)
            if group.lower() not in self.groups:
                return self._error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
            if len(parts) == 5 and low[4] == "resources":
                self.calls["resources.listByResourceGroup"] += 1
                return 200, {"value": self._group_resources(group)}, {}
            if self.groups[group.lower()].get("_deleting") and method in ("PUT", "POST", "PATCH"):
                return self._being_deleted(group)
            if len(parts) == 10 and low[6] == "networksecuritygroups" and low[8] == "securityrules":
                return self._security_rule(method, "/" + "/".join(parts[:8]), parts[9], body)
            if len(parts) == 7 and low[-1] == "virtualmachines":
                self.calls["virtualMachines.list"] += 1
                return 200, {"value": self._list(group, query)}, {}
            if len(parts) < 8 or low[6] not in TYPES_BY_LOWER:
                return self._error(404, "InvalidResourceType", f"The resource type could not be found: {url.path}")
            kind = TYPES_BY_LOWER[low[6]]
            rid = "/".join(parts[:8])
            action = parts[8] if len(parts) > 8 and kind == "virtualMachines" else None
            if len(parts) > 8 and action is None:  # a subnet of a virtual network
                return self._subnet(rid, parts[9] if len(parts) > 9 else "")
            return self._resource(method, kind, "/" + rid, parts[7], body, action, query)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> tuple[int, Any, dict]:
        return status, {"error": {"code": code, "message": message}}, dict(headers or {})

    def _group(self, method: str, name: str, body: dict[str, Any]) -> tuple[int, Any, dict]:
        self.calls[f"resourceGroups.{method}"] += 1
        key = name.lower()
        rid = f"/subscriptions/{self.subscription}/resourceGroups/{name}"
        if method == "PUT" and self.groups.get(key, {}).get("_deleting"):
            return self._being_deleted(name)
        if method == "DELETE":
            if key not in self.groups:
                return self._error(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
            self.groups[key]["_deleting"] = True
            self.groups[key]["properties"]["provisioningState"] = "Deleting"
            op_id = str(uuid.uuid4()).upper().replace("-", "")
            self.operations[op_id] = {"reads": 0, "group": key}
            url = f"{self.endpoint}/subscriptions/{self.subscription}/operationresults/{op_id}?api-version=2024-03-01"
            return 202, None, {"Location": url, "Retry-After": "0"}
        if method == "PUT":
            existed = key in self.groups
            self.groups[key] = {"id": rid, "name": name, "type": "Microsoft.Resources/resourceGroups",
                                "location": body.get("location"), "tags": body.get("tags") or {},
                                "properties": {"provisioningState": "Succeeded"}}  # fmt: skip
            return (200 if existed else 201), self.groups[key], {}
        if key not in self.groups:
            return self._error(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        if method == "HEAD":
            return 204, None, {}
        if method == "GET":
            return 200, {k: v for k, v in self.groups[key].items() if not k.startswith("_")}, {}
        return self._error(405, "MethodNotAllowed", method)

    def _being_deleted(self, name: str) -> tuple[int, Any, dict]:
        return self._error(409, "ResourceGroupBeingDeleted",
                           f"The resource group '{name}' is in deprovisioning state and cannot perform this operation.")  # fmt: skip

    def _operation_result(self, op_id: str) -> tuple[int, Any, dict]:
        """Location polling of a resource group delete: 202 until done, then 200 (the group is gone)."""
        op = self.operations.get(op_id)
        if op is None or "group" not in op:
            return self._error(404, "NotFound", f"operation {op_id} not found")
        op["reads"] += 1
        if op["reads"] < self.op_polls:
            return 202, None, {"Location": f"{self.endpoint}/subscriptions/{self.subscription}/operationresults/"
                                           f"{op_id}?api-version=2024-03-01", "Retry-After": "0"}  # fmt: skip
        group = self.groups.pop(op["group"], None)
        if group is not None:
            start = f"{group['id']}/".lower()
            for key in [k for k in self.resources if k.startswith(start)]:
                del self.resources[key]
        return 200, None, {}

    def _group_resources(self, group: str) -> list[dict[str, Any]]:
        start = f"/subscriptions/{self.subscription}/resourcegroups/{group.lower()}/"
        return [{k: r[k] for k in ("id", "name", "type", "location", "tags") if k in r}
                for key, r in self.resources.items() if key.startswith(start)]  # fmt: skip

    def _security_rule(self, method: str, nsg_id: str, name: str, body: dict[str, Any]) -> tuple[int, Any, dict]:
        self.calls[f"securityRules.{method}"] += 1
        nsg = self.resources.get(nsg_id.lower())
        rid = f"{nsg_id}/securityRules/{name}"
        rule = self._fault(method, "securityRules", (nsg or {}).get("location", ""), "", "", None)
        if rule is not None:
            code = rule.get("code", "AuthorizationFailed")
            return self._error(rule.get("status", SYNC_STATUS.get(code, 400)), code, rule.get("message") or
                               error_message(code, location="", zone="", size="", scope=rid, spot=False))  # fmt: skip
        if nsg is None:
            return self._error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/networkSecurityGroups/"
                               f"{nsg_id.rsplit('/', 1)[-1]}' under resource group '{nsg_id.split('/')[4]}' was not found.")  # fmt: skip
        rules = nsg["properties"].setdefault("securityRules", [])
        existing = next((r for r in rules if r["name"].lower() == name.lower()), None)
        if method == "GET":
            return (200, existing, {}) if existing else self._error(404, "NotFound", f"Resource {rid} not found.")
        if method == "DELETE":
            if existing is None:
                return 204, None, {}
            return 202, None, self._new_op(nsg["location"], "Microsoft.Network", {"key": nsg_id.lower(), "drop_rule": name})
        props = json.loads(json.dumps(body.get("properties") or {}))
        for other in rules:
            same = (other["properties"].get("priority"), other["properties"].get("direction"))
            if other is not existing and same == (props.get("priority"), props.get("direction")):
                return self._error(400, "SecurityRuleConflict", f"Security rule {other['name']} conflicts with rule "
                                   f"{name}. Rules cannot have the same Priority and Direction. To learn more, see "
                                   "aka.ms/nsgrules.")  # fmt: skip
        props["provisioningState"] = "Succeeded"
        new = {"id": rid, "name": name, "type": "Microsoft.Network/networkSecurityGroups/securityRules",
               "properties": props}  # fmt: skip
        if existing is not None:
            rules[rules.index(existing)] = new
        else:
            rules.append(new)
        return (200 if existing else 201), new, self._new_op(nsg["location"], "Microsoft.Network", {"key": nsg_id.lower()})

    def _subnet(self, vnet_id: str, name: str) -> tuple[int, Any, dict]:
        vnet = self.resources.get(("/" + vnet_id).lower())
        for subnet in (vnet or {}).get("properties", {}).get("subnets", []):
            if subnet["name"].lower() == name.lower():
                return 200, subnet, {}
        return self._error(404, "NotFound", f"Resource /{vnet_id}/subnets/{name} not found.")

    def _list(self, group: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        prefix = f"/subscriptions/{self.subscription}/resourcegroups/{group.lower()}/" if group else ""
        out = []
        for key, r in self.resources.items():
            if r["type"] == "Microsoft.Compute/virtualMachines" and key.startswith(prefix):
                out.append(self._view(r, instance_view=query.get("statusOnly") == "true"))
        return out

    def _view(self, vm: dict[str, Any], instance_view: bool) -> dict[str, Any]:
        out = json.loads(json.dumps(vm))
        power = out["properties"].pop("_power", None)
        if instance_view:
            state = out["properties"]["provisioningState"].lower()
            statuses = [{"code": f"ProvisioningState/{state}", "level": "Info"}]
            if power:
                statuses.append({"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"})
            out["properties"]["instanceView"] = {"statuses": statuses}
        return out

    def _new_op(self, location: str, provider: str, effect: dict[str, Any]) -> dict[str, str]:
        op_id = str(uuid.uuid4())
        self.operations[op_id] = {"reads": 0, **effect}
        url = (f"{self.endpoint}/subscriptions/{self.subscription}/providers/{provider}/locations/{location}"
               f"/operations/{op_id}?api-version=2024-07-01")  # fmt: skip
        return {"Azure-AsyncOperation": url, "Location": url + "&monitor=true", "Retry-After": "0"}

    def _operation(self, op_id: str) -> tuple[int, Any, dict]:
        op = self.operations.get(op_id)
        if op is None:
            return self._error(404, "NotFound", f"operation {op_id} not found")
        op["reads"] += 1
        doc: dict[str, Any] = {"name": op_id, "status": "InProgress", "startTime": dt.datetime.now(dt.UTC).isoformat()}
        if op["reads"] >= self.op_polls:
            if not op.get("done"):
                op["done"] = True
                self._complete(op)
            doc["endTime"] = dt.datetime.now(dt.UTC).isoformat()
            doc["status"] = "Failed" if "error" in op else "Succeeded"
            if "error" in op:
                doc["error"] = op["error"]
        return 200, doc, {}

    def _complete(self, op: dict[str, Any]) -> None:
        key = op["key"]
        resource = self.resources.get(key)
        if op.get("delete"):
            self._delete(key)
            return
        if resource is None:
            return
        if "drop_rule" in op:
            rules = resource["properties"].get("securityRules") or []
            resource["properties"]["securityRules"] = [r for r in rules if r["name"].lower() != op["drop_rule"].lower()]
            return
        if "error" in op:
            resource["properties"]["provisioningState"] = "Failed"
            resource["properties"]["_power"] = None
            return
        resource["properties"]["provisioningState"] = "Succeeded"
        if "power" in op:
            resource["properties"]["_power"] = op["power"]
        if resource["type"] == "Microsoft.Compute/virtualMachines":
            self._os_disk(key, resource)

    def _os_disk(self, vm_key: str, vm: dict[str, Any]) -> None:
        """The VM's managed OS disk (created with the VM, untagged, as on Azure)."""
        os_disk = vm["properties"].setdefault("storageProfile", {}).setdefault("osDisk", {})
        name = os_disk.get("name") or f"{vm['name']}_OsDisk_1_{uuid.uuid4().hex}"
        rid = vm["id"].rsplit("/providers/", 1)[0] + f"/providers/Microsoft.Compute/disks/{name}"
        os_disk["name"] = name
        os_disk.setdefault("managedDisk", {})["id"] = rid
        if rid.lower() not in self.resources:
            self.resources[rid.lower()] = {
                "id": rid, "name": name, "type": "Microsoft.Compute/disks", "location": vm["location"],
                "zones": vm.get("zones"), "tags": {},
                "properties": {"diskSizeGB": os_disk.get("diskSizeGB", 30), "osType": "Linux",
                               "provisioningState": "Succeeded", "diskState": "Attached"},
            }  # fmt: skip

    def _delete(self, key: str) -> None:
        resource = self.resources.pop(key, None)
        if resource is None:
            return
        props = resource.get("properties") or {}
        refs = []
        for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or ():
            refs.append((nic.get("id"), (nic.get("properties") or {}).get("deleteOption")))
        os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
        refs.append(((os_disk.get("managedDisk") or {}).get("id"), os_disk.get("deleteOption")))
        for config in props.get("ipConfigurations") or ():
            pip = (config.get("properties") or {}).get("publicIPAddress") or {}
            refs.append((pip.get("id"), (pip.get("properties") or {}).get("deleteOption")))
        for rid, option in refs:
            if rid and option == "Delete":
                self._delete(rid.lower())

    def _resource(self, method: str, kind: str, rid: str, name: str, body: dict[str, Any],
                  action: str | None, query: dict[str, str]) -> tuple[int, Any, dict]:  # fmt: skip
        self.calls[f"{kind}.{action or method}"] += 1
        key = rid.lower()
        existing = self.resources.get(key)
        provider = PROVIDERS[kind.lower()]
        props = body.get("properties") or {}
        location = body.get("location") or (existing or {}).get("location") or ""
        zone = ",".join(body.get("zones") or (existing or {}).get("zones") or [])
        size = ((props.get("hardwareProfile") or (existing or {}).get("properties", {}).get("hardwareProfile") or {})
                .get("vmSize", ""))  # fmt: skip
        spot = (props.get("priority") == "Spot") if method == "PUT" else None
        rule = self._fault(action.upper() if action else method, kind, location, zone, size, spot)
        code = (rule or {}).get("code", "AllocationFailed")
        if rule is not None and code not in ASYNC_CODES:
            message = rule.get("message") or error_message(code, location=location, zone=zone, size=size,
                                                           scope=rid, spot=bool(spot))  # fmt: skip
            headers = {"Retry-After": "0"} if code == "TooManyRequests" else {}
            return self._error(rule.get("status", SYNC_STATUS.get(code, 400)), code, message, headers)
        if method == "GET" and action is None:
            if existing is None:
                return self._error(404, "ResourceNotFound", f"The Resource '{provider}/{kind}/{name}' under resource "
                                   f"group '{rid.split('/')[4]}' was not found.")  # fmt: skip
            return 200, self._view(existing, instance_view=query.get("$expand") == "instanceView"), {}
        if method == "DELETE":
            if existing is None:
                return 204, None, {}
            return 202, None, self._new_op(existing["location"], provider, {"key": key, "delete": True})
        if action is not None:
            if existing is None:
                return self._error(404, "ResourceNotFound", f"The Resource '{provider}/{kind}/{name}' was not found.")
            power = {"deallocate": "deallocated", "start": "running", "poweroff": "stopped"}.get(action.lower())
            existing["properties"]["_power"] = {"deallocated": "deallocating", "running": "starting"}.get(power or "", power)
            return 202, None, self._new_op(existing["location"], provider, {"key": key, "power": power})
        # PUT: create or update (idempotent).
        resource = json.loads(json.dumps(body))
        resource.update(id=rid, name=name, type=f"{provider}/{kind}", location=location)
        rprops = resource.setdefault("properties", {})
        if existing is not None:
            rprops = {**existing["properties"], **rprops}
            resource["properties"] = rprops
        rprops["provisioningState"] = "Updating" if existing else "Creating"
        if kind == "virtualMachines":
            rprops.pop("osProfile", None)
            rprops["osProfile"] = {"computerName": (props.get("osProfile") or {}).get("computerName"),
                                   "adminUsername": (props.get("osProfile") or {}).get("adminUsername")}  # fmt: skip
            rprops.setdefault("vmId", str(uuid.uuid4()))
            rprops.setdefault("timeCreated", dt.datetime.now(dt.UTC).isoformat())
            rprops.setdefault("_power", "starting")
        elif kind == "publicIPAddresses":
            rprops.setdefault("ipAddress", f"20.{next(self._ips) % 250}.{next(self._ips) % 250}.{next(self._ips) % 250}")
        elif kind == "networkInterfaces":
            for i, config in enumerate(rprops.get("ipConfigurations") or ()):
                config.setdefault("id", f"{rid}/ipConfigurations/{config.get('name', i)}")
                config.setdefault("properties", {}).setdefault("privateIPAddress", f"10.100.0.{next(self._ips) % 250 + 4}")
        elif kind == "virtualNetworks":
            for subnet in rprops.get("subnets") or ():
                subnet["id"] = f"{rid}/subnets/{subnet['name']}"
        if existing is not None and existing["properties"].get("provisioningState") == "Succeeded" and rule is None:
            rprops["provisioningState"] = "Succeeded"
        self.resources[key] = resource
        effect: dict[str, Any] = {"key": key, "power": "running"} if kind == "virtualMachines" else {"key": key}
        if rule is not None:
            message = rule.get("message") or error_message(code, location=location, zone=zone, size=size,
                                                           scope=rid, spot=bool(spot))  # fmt: skip
            effect["error"] = {"code": code, "message": message}
        out = self._view(resource, instance_view=False)
        return (200 if existing else 201), out, self._new_op(location, provider, effect)


@pytest.fixture(scope="session")
def fake_arm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    yield from serve_for_session(("azure.mgmt.compute", "azure.mgmt.network", "azure.mgmt.resource"),
                                 "azure-mgmt-compute/-network/-resource are not installed (pip install -e '.[azure]')",
                                 lambda: FakeArm().start(tmp_path_factory.mktemp("arm-tls")))  # fmt: skip


@pytest.fixture
def fake_arm(fake_arm_server: FakeArm, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArm]:
    """The fake with clean faults and stats, no ambient Azure credentials, and the loopback guard."""
    ambient = ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID",
               "AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT")  # fmt: skip
    yield from guarded(fake_arm_server, monkeypatch, dict.fromkeys(ambient))
