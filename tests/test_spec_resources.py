"""Resources: accepted input forms, canonical output, candidates, equality and hashing."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from airflow_provider_sky.spec import Autostop, Quantity, Resources, SpecError
from airflow_provider_sky.spec.frozendict import FrozenDict
from airflow_provider_sky.spec.job_recovery import JobRecovery


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8", Quantity(8)),
        ("8+", Quantity(8, at_least=True)),
        (" 8 + ", Quantity(8, at_least=True)),
        (8, Quantity(8)),
        (0.5, Quantity(0.5)),
        ("0.5+", Quantity(0.5, True)),
        (Quantity(2, True), Quantity(2, True)),
    ],
)
def test_cpus_forms(raw: object, expected: Quantity) -> None:
    assert Resources(cpus=raw).cpus == expected  # type: ignore[arg-type]
    assert Resources.from_dict({"cpus": raw}).cpus == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("32", Quantity(32)),
        ("32+", Quantity(32, True)),
        ("32GB", Quantity(32)),
        ("32gb+", Quantity(32, True)),
        ("32 GiB", Quantity(32)),
        ("1TB", Quantity(1024)),
        (64, Quantity(64)),
    ],
)
def test_memory_forms(raw: object, expected: Quantity) -> None:
    assert Resources.from_dict({"memory": raw}).memory == expected


def test_quantity() -> None:
    assert str(Quantity(8)) == "8"
    assert str(Quantity(8, True)) == "8+"
    assert str(Quantity(0.5)) == "0.5"
    assert Quantity(8).satisfied_by(8) and not Quantity(8).satisfied_by(16)
    assert Quantity(8, True).satisfied_by(16) and not Quantity(8, True).satisfied_by(4)
    assert Quantity.parse(str(Quantity(1e20, True)), "x") == Quantity(1e20, True)
    assert hash(Quantity(8)) == hash(Quantity(8.0))


@pytest.mark.parametrize(
    ("raw", "accelerators", "ordered"),
    [
        ("V100:1", {"V100": 1}, False),
        ("v100", {"V100": 1}, False),
        ("a100-80gb:8", {"A100-80GB": 8}, False),
        ("T4:0.5", {"T4": 0.5}, False),
        ({"V100": 2}, {"V100": 2}, False),
        ({"V100": None}, {"V100": 1}, False),
        ({"V100": "4"}, {"V100": 4}, False),
        ({"V100": 2.0}, {"V100": 2}, False),
        (["V100:1", "A100:1"], {"V100": 1, "A100": 1}, True),
        ([{"V100": 1}, "A100"], {"V100": 1, "A100": 1}, True),
        (["V100:1"], {"V100": 1}, False),
        ({"V100", "T4"}, {"T4": 1, "V100": 1}, False),
        ({"V100": 1, "T4": 1}, {"V100": 1, "T4": 1}, False),
        ("TPU-V5E-16", {"tpu-v5e-16": 1}, False),
        ("inferentia2:4", {"Inferentia2": 4}, False),
    ],
)
def test_accelerator_forms(raw: object, accelerators: dict, ordered: bool) -> None:
    res = Resources.from_dict({"accelerators": raw})
    assert res.accelerators == accelerators
    assert res.is_ordered is ordered
    assert Resources(accelerators=raw) == res
    assert Resources.from_dict(res.to_dict()) == res


def test_canonical_to_dict() -> None:
    res = Resources(
        infra="aws/us-east-1", accelerators="v100", cpus="8+", memory=32, disk_size=100, ports=8080
    )
    assert res.to_dict() == {
        "infra": "aws/us-east-1",
        "cpus": "8+",
        "memory": "32",
        "accelerators": {"V100": 1},
        "disk_size": 100,
        "ports": ["8080"],
    }
    assert Resources().to_dict() == {}
    assert Resources(autostop=True).to_dict() == {"autostop": {"idle_minutes": 5, "down": False}}
    assert Resources(job_recovery="failover").to_dict() == {"job_recovery": "FAILOVER"}


@pytest.mark.parametrize(
    ("infra", "location"),
    [
        ("aws", ("aws", None, None)),
        ("AWS/us-east-1", ("aws", "us-east-1", None)),
        ("aws/us-east-1/us-east-1a", ("aws", "us-east-1", "us-east-1a")),
        ("gcp/*/us-central1-a", ("gcp", None, "us-central1-a")),
        ("*/us-east-1", (None, "us-east-1", None)),
        ("*", (None, None, None)),
        ("local", ("local", None, None)),
        ("ssh/my-pool", ("ssh", "my-pool", None)),
        ("azure/eastus", ("azure", "eastus", None)),
    ],
)
def test_infra_forms(infra: str, location: tuple) -> None:
    res = Resources.from_dict({"infra": infra})
    assert (res.cloud, res.region, res.zone) == location
    assert Resources.from_dict(res.to_dict()) == res
    assert Resources(infra=infra) == res


def test_legacy_location_keys_and_region_only() -> None:
    res = Resources.from_dict({"cloud": "GCP", "region": "us-central1", "zone": "us-central1-a"})
    assert res.infra == "gcp/us-central1/us-central1-a"
    assert Resources.from_dict({"region": "us-east-1"}).infra == "*/us-east-1"
    assert Resources.from_dict({"cloud": "gcp", "zone": "us-central1-a"}).infra == "gcp/*/us-central1-a"


def test_other_fields() -> None:
    res = Resources.from_dict(
        {
            "instance_type": "p3.2xlarge",
            "use_spot": True,
            "disk_size": "200GB",
            "disk_tier": "BEST",
            "image_id": "docker:nvcr.io/nvidia/pytorch:24.01-py3",
            "ports": ["8080", 8081, "9000-9010", 8080],
            "labels": {"team": "ml", "priority": 1},
            "autostop": "2h",
            "job_recovery": {"strategy": "eager-next-region", "max_restarts_on_errors": 2},
        }
    )
    assert res.disk_size == 200 and res.disk_tier == "best"
    assert res.ports == ("8080", "8081", "9000-9010")
    assert res.labels == {"team": "ml", "priority": "1"}
    assert res.autostop == Autostop(120)
    assert res.job_recovery == JobRecovery("EAGER_NEXT_REGION", 2)
    assert Resources.from_dict(res.to_dict()) == res
    regional = Resources(image_id={"us-east-1": "ami-123", "us-west-2": "ami-456"})
    assert regional.to_dict() == {"image_id": {"us-east-1": "ami-123", "us-west-2": "ami-456"}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, Autostop(5, False)),
        (False, None),
        (None, None),
        (10, Autostop(10)),
        ("10", Autostop(10)),
        ("10m", Autostop(10)),
        ("1h", Autostop(60)),
        ("1d", Autostop(1440)),
        ({"idle_minutes": 15, "down": True}, Autostop(15, True)),
        ({"idle_minutes": "1h"}, Autostop(60)),
        ({"down": True}, Autostop(5, True)),
    ],
)
def test_autostop_forms(raw: object, expected: Autostop | None) -> None:
    assert Resources.from_dict({"autostop": raw}).autostop == expected


def test_python_construction_normalizes() -> None:
    res = Resources(cpus="4+", accelerators={"a100": 8}, labels={"x": 1}, ports=[22])
    assert res.cpus == Quantity(4, True)
    assert res.accelerators == {"A100": 8}
    assert isinstance(res.accelerators, FrozenDict)
    assert res.labels == {"x": "1"}
    assert res.ports == ("22",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.cpus = Quantity(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.accelerators["A100"] = 1  # type: ignore[index]


def test_equality_and_hashing() -> None:
    a = Resources(cpus=4, accelerators={"V100": 1, "T4": 1})
    b = Resources.from_dict({"cpus": "4", "accelerators": {"T4": 1, "V100": 1}})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    ordered1 = Resources(accelerators=["V100", "T4"])
    ordered2 = Resources(accelerators=["T4", "V100"])
    assert ordered1 != ordered2  # preference order matters for lists
    assert ordered1 != Resources(accelerators={"V100", "T4"})
    assert Resources(use_spot=True) != Resources()
    assert Resources() != "resources"
    assert pickle.loads(pickle.dumps(a)) == a
    assert dataclasses.replace(a, cpus="8").cpus == Quantity(8)


def test_candidates_plain_and_sets() -> None:
    plain = Resources(cpus=2)
    assert plain.candidates() == [plain] and not plain.is_ordered
    any_set = Resources(infra="aws", accelerators={"V100", "T4"})
    cands = any_set.candidates()
    assert {next(iter(c.accelerators)) for c in cands if c.accelerators} == {"V100", "T4"}
    assert all(c.cloud == "aws" for c in cands)


def test_any_of_item_overrides_and_null() -> None:
    res = Resources.from_dict(
        {
            "infra": "aws/us-east-1",
            "use_spot": True,
            "disk_size": 512,
            "accelerators": "A100:1",
            "any_of": [
                {"region": "us-west-2"},
                {"use_spot": False, "disk_size": 256},
                {"cloud": "gcp"},
                {"accelerators": None, "infra": None},
            ],
        }
    )
    first, second, third, fourth = res.candidates()
    assert first.infra == "aws/us-west-2" and first.use_spot and first.disk_size == 512
    assert second.infra == "aws/us-east-1" and not second.use_spot and second.disk_size == 256
    assert third.infra == "gcp"
    assert fourth.accelerators is None and fourth.infra is None
    assert Resources.from_dict(res.to_dict()) == res
    assert res.to_dict()["any_of"][1] == {"use_spot": False, "disk_size": 256}
    assert res.to_dict()["any_of"][3] == {"infra": None, "accelerators": None}


def test_python_any_of_items() -> None:
    res = Resources(
        cpus=8,
        ordered=[{"infra": "gcp", "accelerators": "H100:8"}, Resources(infra="aws", accelerators="A100:8")],
    )
    first, second = res.candidates()
    assert first.cpus == Quantity(8)  # mapping items inherit the top level
    assert second.cpus is None  # Resources items are used as given
    assert res.is_ordered
    assert dataclasses.replace(res) == res
    assert Resources.from_dict(res.to_dict()) == res


def test_fractional_accelerators_and_tpus() -> None:
    res = Resources(accelerators="T4:0.25")
    assert res.accelerators == {"T4": 0.25}
    assert res.to_dict() == {"accelerators": {"T4": 0.25}}
    assert Resources(accelerators=["T4:0.5", "L4"]).to_dict() == {"accelerators": ["T4:0.5", "L4:1"]}


def test_unknown_keys_suggest() -> None:
    with pytest.raises(SpecError, match="did you mean 'instance_type'"):
        Resources.from_dict({"instancetype": "m5.large"})
    with pytest.raises(SpecError, match="did you mean 'use_spot'"):
        Resources.from_dict({"use_spots": True})
