"""`catalog refresh` against local HTTP servers answering with the price APIs' response shapes."""

from __future__ import annotations

import argparse
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_sky.catalog import load_catalog
from airflow_provider_sky.catalog.refresh import refresh_aws, refresh_azure, refresh_gcp
from airflow_provider_sky.catalog.v8 import read_vms_csv

Handler = Callable[[str, str, dict[str, list[str]], bytes], tuple[int, str, bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class H(BaseHTTPRequestHandler):
            def _any(self) -> None:
                u = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, ctype, out = handle(self.command, u.path, urllib.parse.parse_qs(u.query), body)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _any

            def log_message(self, *a: object) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def _aws_product(sku: str, itype: str, vcpu: str, mem: str, gpu: str = "0", os_: str = "Linux", tenancy: str = "Shared") -> dict:
    return {"sku": sku, "productFamily": "Compute Instance", "attributes": {
        "servicecode": "AmazonEC2", "location": "US East (N. Virginia)", "regionCode": "us-east-1", "instanceType": itype,
        "vcpu": vcpu, "memory": mem, "gpu": gpu, "tenancy": tenancy, "operatingSystem": os_, "preInstalledSw": "NA",
        "capacitystatus": "Used", "physicalProcessor": "Intel Xeon"}}  # fmt: skip


def _aws_term(sku: str, usd: str) -> dict:
    return {f"{sku}.JRTCKXETXF": {"offerTermCode": "JRTCKXETXF", "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z",
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "description": f"${usd} per On Demand Linux",
                                "beginRange": "0", "endRange": "Inf", "pricePerUnit": {"USD": usd}}}, "termAttributes": {}}}  # fmt: skip


AWS_OFFER = {
    "formatVersion": "v1.0", "offerCode": "AmazonEC2", "version": "20261201000000", "publicationDate": "2026-12-01T00:00:00Z",
    "products": {
        "SKU1": _aws_product("SKU1", "m6i.2xlarge", "8", "32 GiB"),
        "SKU2": _aws_product("SKU2", "p3.2xlarge", "8", "61 GiB", gpu="1"),
        "SKU3": _aws_product("SKU3", "m6i.2xlarge", "8", "32 GiB", os_="Windows"),
        "SKU4": _aws_product("SKU4", "m6i.2xlarge", "8", "32 GiB", tenancy="Dedicated"),
    },
    "terms": {"OnDemand": {"SKU1": _aws_term("SKU1", "0.3840000000"), "SKU2": _aws_term("SKU2", "3.0600000000"),
                           "SKU3": _aws_term("SKU3", "0.7520000000"), "SKU4": _aws_term("SKU4", "0.4220000000")}},
}  # fmt: skip

EC2_NS = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'
AZS = f"""<?xml version="1.0" encoding="UTF-8"?>
<DescribeAvailabilityZonesResponse {EC2_NS}><requestId>r1</requestId><availabilityZoneInfo>
<item><zoneName>us-east-1a</zoneName><zoneId>use1-az1</zoneId><zoneState>available</zoneState><regionName>us-east-1</regionName></item>
<item><zoneName>us-east-1b</zoneName><zoneId>use1-az2</zoneId><zoneState>available</zoneState><regionName>us-east-1</regionName></item>
</availabilityZoneInfo></DescribeAvailabilityZonesResponse>"""


def _spot_page(items: list[tuple[str, str, str, str]], token: str) -> str:
    body = "".join(
        f"<item><instanceType>{t}</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>{p}</spotPrice>"
        f"<timestamp>{ts}</timestamp><availabilityZone>{z}</availabilityZone></item>"
        for t, z, p, ts in items
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse {EC2_NS}><requestId>r2</requestId><spotPriceHistorySet>{body}</spotPriceHistorySet><nextToken>{token}</nextToken></DescribeSpotPriceHistoryResponse>'


def test_aws_offer_file_and_spot_history(serve, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    seen: list[str] = []

    def pricing(method: str, path: str, q: dict, body: bytes) -> tuple[int, str, bytes]:
        seen.append(path)
        if path == "/offers/v1.0/aws/AmazonEC2/current/us-east-1/index.json":
            return 200, "application/json", json.dumps(AWS_OFFER).encode()
        return 404, "text/plain", b"no such offer"

    def ec2(method: str, path: str, q: dict, body: bytes) -> tuple[int, str, bytes]:
        form = urllib.parse.parse_qs(body.decode())
        action = form["Action"][0]
        if action == "DescribeAvailabilityZones":
            return 200, "text/xml", AZS.encode()
        assert action == "DescribeSpotPriceHistory" and form["ProductDescription.1"] == ["Linux/UNIX"]
        if "NextToken" not in form:  # two pages; an older price is superseded by the newer one
            page = _spot_page([("p3.2xlarge", "us-east-1a", "0.950000", "2026-12-01T10:00:00.000Z"),
                               ("p3.2xlarge", "us-east-1a", "0.918000", "2026-12-07T10:00:00.000Z")], "page2")  # fmt: skip
        else:
            page = _spot_page([("m6i.2xlarge", "us-east-1b", "0.151000", "2026-12-07T09:00:00.000Z")], "")
        return 200, "text/xml", page.encode()

    out = tmp_path / "cat"
    summary = refresh_aws(out, ["us-east-1"], endpoint=serve(pricing), ec2_endpoint=serve(ec2))
    assert summary.rows == 4 and seen == ["/offers/v1.0/aws/AmazonEC2/current/us-east-1/index.json"]
    t = read_vms_csv(out / "aws" / "vms.csv", "aws")
    rows = {(str(t.instance_type[i]), str(t.zone[i])): i for i in range(len(t))}
    p3 = rows[("p3.2xlarge", "use1-az1")]
    assert t.accelerator[p3] == "V100" and t.accelerator_count[p3] == 1 and t.price[p3] == pytest.approx(3.06)
    assert t.spot_price[p3] == pytest.approx(0.918)
    m6 = rows[("m6i.2xlarge", "use1-az2")]
    assert t.spot_price[m6] == pytest.approx(0.151) and t.memory_gib[m6] == 32 and t.price[m6] == pytest.approx(0.384)
    assert t.spot_price[rows[("m6i.2xlarge", "use1-az1")]] != t.spot_price[rows[("m6i.2xlarge", "use1-az1")]]  # NaN: no spot
    assert "p3.2xlarge" in {o.instance_type for o in map(load_catalog(out).offering, range(len(t)))}


def _azure_item(sku: str, region: str, price: float, kind: str = "", product: str = "Virtual Machines DSv3 Series") -> dict:
    name = sku.removeprefix("Standard_").replace("_", " ")
    return {"currencyCode": "USD", "tierMinimumUnits": 0.0, "retailPrice": price, "unitPrice": price, "armRegionName": region,
            "location": "US East", "effectiveStartDate": "2026-01-01T00:00:00Z", "meterId": "m", "meterName": name + kind,
            "productId": "DZH318Z0BQ4L", "skuId": "DZH318Z0BQ4L/00", "productName": product, "skuName": name + kind,
            "serviceName": "Virtual Machines", "serviceId": "DZH313Z7MMC8", "serviceFamily": "Compute",
            "unitOfMeasure": "1 Hour", "type": "Consumption", "isPrimaryMeterRegion": True, "armSkuName": sku}  # fmt: skip


def test_azure_retail_prices_with_paging(serve, tmp_path) -> None:
    pages = {
        "0": [_azure_item("Standard_D8s_v3", "eastus", 0.384), _azure_item("Standard_D8s_v3", "eastus", 0.0768, " Spot"),
              _azure_item("Standard_D8s_v3", "eastus", 0.752, product="Virtual Machines DSv3 Series Windows")],
        "100": [_azure_item("Standard_NC6s_v3", "eastus", 3.06, product="Virtual Machines NCSv3 Series"),
                _azure_item("Standard_D8s_v3", "eastus", 0.0768, " Low Priority"),
                _azure_item("Standard_Q9zz", "eastus", 1.0, product="Virtual Machines Q Series")],
    }  # fmt: skip
    base = ""

    def handle(method: str, path: str, q: dict, body: bytes) -> tuple[int, str, bytes]:
        assert path == "/api/retail/prices" and "serviceName eq 'Virtual Machines'" in q["$filter"][0]
        skip = q.get("$skip", ["0"])[0]
        nxt = f"{base}/api/retail/prices?{urllib.parse.urlencode({'$filter': q['$filter'][0], '$skip': '100'})}" if skip == "0" else None
        page = {"BillingCurrency": "USD", "CustomerEntityId": "Default", "CustomerEntityType": "Retail",
                "Items": pages[skip], "NextPageLink": nxt, "Count": len(pages[skip])}  # fmt: skip
        return 200, "application/json", json.dumps(page).encode()

    base = serve(handle)
    summary = refresh_azure(tmp_path, endpoint=base)
    assert summary.rows == 2 and summary.skipped == {"unknown size": 1}
    t = read_vms_csv(tmp_path / "azure" / "vms.csv", "azure")
    by = {str(t.instance_type[i]): i for i in range(len(t))}
    d8 = by["Standard_D8s_v3"]
    assert (t.vcpus[d8], t.memory_gib[d8], t.price[d8], t.spot_price[d8]) == (8, 32, 0.384, 0.0768)
    nc = by["Standard_NC6s_v3"]
    assert t.accelerator[nc] == "V100" and t.vcpus[nc] == 6


def _gcp_sku(desc: str, group: str, usage: str, regions: list[str], units: str, nanos: int, family: str = "Compute") -> dict:
    return {"name": f"services/6F81-5844-456A/skus/{abs(hash(desc + usage)) % 10**12:012d}", "skuId": "x", "description": desc,
            "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": family, "resourceGroup": group, "usageType": usage},
            "serviceRegions": regions, "pricingInfo": [{"summary": "", "pricingExpression": {"usageUnit": "h",
            "displayQuantity": 1, "tieredRates": [{"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos}}],
            "usageUnitDescription": "hour", "baseUnit": "s", "baseUnitDescription": "second", "baseUnitConversionFactor": 3600}}],
            "serviceProviderName": "Google"}  # fmt: skip


def test_gcp_billing_catalog_with_paging(serve, tmp_path) -> None:
    r = ["us-central1"]
    pages = {
        "": [_gcp_sku("N2 Instance Core running in Americas", "CPU", "OnDemand", r, "0", 31_611_000),
             _gcp_sku("N2 Instance Ram running in Americas", "RAM", "OnDemand", r, "0", 4_237_000),
             _gcp_sku("Spot Preemptible N2 Instance Core running in Americas", "CPU", "Preemptible", r, "0", 7_650_000)],
        "tok2": [_gcp_sku("Spot Preemptible N2 Instance Ram running in Americas", "RAM", "Preemptible", r, "0", 1_025_000),
                 _gcp_sku("N1 Predefined Instance Core running in Americas", "N1Standard", "OnDemand", r, "0", 31_611_000),
                 _gcp_sku("N1 Predefined Instance Ram running in Americas", "N1Standard", "OnDemand", r, "0", 4_237_000),
                 _gcp_sku("Nvidia Tesla V100 GPU running in Americas", "GPU", "OnDemand", r, "2", 480_000_000),
                 _gcp_sku("N2 Custom Instance Core running in Americas", "CPU", "OnDemand", r, "0", 33_191_000),
                 _gcp_sku("Network Internet Egress from Americas to Americas", "PremiumInternetEgress", "OnDemand", r, "0", 120_000_000,
                          family="Network")],
    }  # fmt: skip

    def handle(method: str, path: str, q: dict, body: bytes) -> tuple[int, str, bytes]:
        assert path == "/v1/services/6F81-5844-456A/skus" and q["key"] == ["k"]
        tok = q.get("pageToken", [""])[0]
        return 200, "application/json", json.dumps({"skus": pages[tok], "nextPageToken": "tok2" if tok == "" else ""}).encode()

    summary = refresh_gcp(tmp_path, endpoint=serve(handle), api_key="k", zones={"us-central1": ["us-central1-a", "us-central1-f"]})
    assert summary.rows > 0
    t = read_vms_csv(tmp_path / "gcp" / "vms.csv", "gcp")
    i = next(k for k in range(len(t)) if t.instance_type[k] == "n2-standard-8" and t.zone[k] == "us-central1-f")
    assert t.price[i] == pytest.approx(8 * 0.031611 + 32 * 0.004237)
    assert t.spot_price[i] == pytest.approx(8 * 0.00765 + 32 * 0.001025)
    v100 = [k for k in range(len(t)) if t.accelerator[k] == "V100" and t.accelerator_count[k] == 1]
    assert v100 and all(str(t.instance_type[k]).startswith("n1-") for k in v100)  # joined with N1 hosts
    k = min(v100, key=lambda k: t.price[k])
    assert t.price[k] == pytest.approx(2.48 + 0.031611 + 3.75 * 0.004237)  # GPU + n1-standard-1


def test_cli_parser_registers_catalog_refresh(serve, tmp_path) -> None:
    from rich.console import Console

    from airflow_provider_sky.cli.catalog import add_catalog_parser

    parser = argparse.ArgumentParser()
    add_catalog_parser(parser.add_subparsers(dest="command"))

    def handle(method: str, path: str, q: dict, body: bytes) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps({"Items": [_azure_item("Standard_D8s_v3", "eastus", 0.384)], "NextPageLink": None}).encode()

    args = parser.parse_args(["catalog", "refresh", "--cloud", "azure", "--out", str(tmp_path), "--endpoint", serve(handle)])
    console = Console(record=True, width=200)
    assert args.func(args, console) == 0
    assert "wrote 1 rows" in console.export_text()
    bad = parser.parse_args(["catalog", "refresh", "--cloud", "azure", "--out", str(tmp_path), "--endpoint", "http://127.0.0.1:9"])
    assert bad.func(bad, console) == 1
