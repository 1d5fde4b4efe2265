"""Cluster names are deterministic and cloud-safe; settings parse connection extras."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sky.provision.naming import MAX_CLUSTER_NAME, cluster_name_for, validate_cluster_name
from airflow_provider_sky.provision.settings import SkySettings


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300), st.text(max_size=80), st.integers(-1, 50))
def test_generated_names_are_valid_and_stable(dag_id: str, task_id: str, run_id: str, map_index: int) -> None:
    name = cluster_name_for(dag_id, task_id, run_id, map_index)
    assert validate_cluster_name(name) is None, name
    assert len(name) <= MAX_CLUSTER_NAME
    assert name == cluster_name_for(dag_id, task_id, run_id, map_index)


def test_names_differ_per_run_and_map_index() -> None:
    a = cluster_name_for("etl", "train", "manual__2026-01-01")
    b = cluster_name_for("etl", "train", "manual__2026-01-02")
    c = cluster_name_for("etl", "train", "manual__2026-01-01", 3)
    assert len({a, b, c}) == 3
    assert a.startswith("sky-etl-train-")


@pytest.mark.parametrize("bad", ["Upper", "has_underscore", "-lead", "trail-", "x" * 41, "9starts-digit"])
def test_invalid_names_are_explained(bad: str) -> None:
    assert validate_cluster_name(bad)


def test_settings_from_extras() -> None:
    s = SkySettings.from_mapping({"enabled_clouds": "local, aws", "region_preferences": "us-east-1", "state_db_url": ""})
    assert s.enabled_clouds == ("local", "aws")
    assert s.region_preferences == ("us-east-1",)
    assert SkySettings.from_mapping({}).enabled_clouds == ("local",)
    with pytest.raises(ValueError, match="enabled_clouds"):
        SkySettings.from_mapping({"enabled_clouds": "local,awz"})
