"""``rank_placements`` (failover order) and ``optimize(clouds=...)``."""

from __future__ import annotations

import pytest

from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.offerings import Offering, OfferingTable
from airflow_provider_sky.optimizer import InfeasibleTaskError, optimize, rank_placements
from airflow_provider_sky.spec.resources import Resources
from airflow_provider_sky.spec.task import Task

NAN = float("nan")


@pytest.fixture(scope="module")
def cat() -> Catalog:
    rows = [
        # cloud, region, zone, type, cpus, mem, acc, count, gpu mem, price, spot
        Offering("aws", "us-east-1", "us-east-1a", "p3.2xlarge", 8, 61, "V100", 1, 16, 3.06, 0.9),
        Offering("aws", "us-east-1", "us-east-1b", "p3.2xlarge", 8, 61, "V100", 1, 16, 3.06, 1.1),
        Offering("aws", "eu-west-1", "eu-west-1a", "p3.2xlarge", 8, 61, "V100", 1, 16, 3.30, NAN),
        Offering("gcp", "us-central1", "us-central1-a", "n1-v100", 8, 30, "V100", 1, 16, 2.95, 0.8),
        Offering("gcp", "us-central1", "us-central1-a", "n1-v100-big", 16, 60, "V100", 1, 16, 3.40, 1.0),
        Offering("azure", "eastus", "eastus-1", "NC6s_v3", 6, 112, "V100", 1, 16, 3.10, NAN),
        Offering("aws", "us-east-1", "us-east-1a", "g5.xlarge", 4, 16, "A10G", 1, 24, 1.01, 0.4),
        Offering("aws", "us-east-1", "us-east-1a", "m6i.2xlarge", 8, 32, None, 0, NAN, 0.384, 0.15),
        Offering("gcp", "us-central1", "us-central1-a", "n2-standard-8", 8, 32, None, 0, NAN, 0.39, 0.09),
    ]
    return Catalog(OfferingTable.from_offerings(rows))


def _task(res: dict, **kw) -> Task:
    return Task(name="t", resources=Resources.from_dict(res), **kw)


def test_best_first_cheapest_per_location(cat: Catalog) -> None:
    ranked = rank_placements(_task({"accelerators": "V100"}), cat)
    assert [(p.cloud, p.zone, p.instance_type) for p in ranked] == [
        ("gcp", "us-central1-a", "n1-v100"),  # the cheaper of the two gcp types in that zone only
        ("aws", "us-east-1a", "p3.2xlarge"),
        ("aws", "us-east-1b", "p3.2xlarge"),
        ("azure", "eastus-1", "NC6s_v3"),
        ("aws", "eu-west-1a", "p3.2xlarge"),
    ]
    assert [p.cost for p in ranked] == sorted(p.cost for p in ranked)
    assert rank_placements(_task({"accelerators": "V100"}), cat, limit=2) == ranked[:2]


def test_hours_nodes_spot_and_blocklist(cat: Catalog) -> None:
    t = _task({"accelerators": "V100", "use_spot": True}, num_nodes=2, estimated_hours=3)
    ranked = rank_placements(t, cat)
    assert all(p.use_spot for p in ranked)
    assert ranked[0].cloud == "gcp" and ranked[0].cost == pytest.approx(0.8 * 2 * 3)
    assert "eu-west-1" not in {p.region for p in ranked}  # no spot price there
    after = rank_placements(t, cat, blocked=[("gcp", None, None, None), ("aws", "us-east-1", "us-east-1a", None)])
    assert [(p.cloud, p.zone) for p in after] == [("aws", "us-east-1b")]
    with pytest.raises(InfeasibleTaskError, match="blocked"):
        rank_placements(t, cat, blocked=[(None, None, None, "p3.2xlarge"), ("gcp",)])


def test_pins_any_of_and_ordered(cat: Catalog) -> None:
    pinned = rank_placements(_task({"accelerators": "V100", "cloud": "aws"}), cat)
    assert {p.cloud for p in pinned} == {"aws"}
    any_of = rank_placements(_task({"any_of": [{"accelerators": "V100"}, {"accelerators": "A10G"}]}), cat)
    assert any_of[0].instance_type == "g5.xlarge"  # cheapest of the union
    ordered = rank_placements(_task({"ordered": [{"accelerators": "V100", "cloud": "azure"}, {"accelerators": "A10G"}]}), cat)
    assert [p.instance_type for p in ordered] == ["NC6s_v3", "g5.xlarge"]  # user order first, then price


def test_clouds_restrict_candidates(cat: Catalog) -> None:
    assert {p.cloud for p in rank_placements(_task({"accelerators": "V100"}), cat, clouds=("aws", "local"))} == {"aws"}
    plan = optimize([_task({"cpus": 8})], cat, clouds=["aws"])
    assert plan.tasks["t"].instance_type == "m6i.2xlarge"
    assert optimize([_task({"cpus": 8})], cat).tasks["t"].cloud == "aws"
    # only this machine enabled: unpinned CPU tasks go to the local backend
    assert optimize([_task({"cpus": 8})], cat, clouds=("local",)).tasks["t"].cloud == "local"
    assert rank_placements(_task({"cpus": 2}), cat, clouds=("local",))[0].cloud == "local"
    with pytest.raises(InfeasibleTaskError, match="not enabled"):
        optimize([_task({"accelerators": "V100"})], cat, clouds=("local",))
    with pytest.raises(InfeasibleTaskError, match="not enabled"):
        rank_placements(_task({"accelerators": "V100"}), cat, clouds=("azure-stack",))


def test_plan_json_round_trip_is_stable(cat: Catalog) -> None:
    tasks = [_task({"cpus": 8}, outputs={"o": 50}), Task(name="u", resources=Resources.from_dict({"accelerators": "V100"}), depends_on=["t"])]
    plan = optimize(tasks, cat)
    d = plan.to_json_dict()
    assert set(d) == {"total_cost", "total_hours", "tasks", "egress"}
    assert set(d["tasks"]["t"]) == {"cloud", "region", "zone", "instance_type", "accelerators", "use_spot", "hourly_price", "cost"}
    assert type(plan).from_json_dict(d).to_json_dict() == d
