"""Console links point at the cluster's instances; the operator exposes them as an extra link."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_provider_sky.links.sky import SkyClusterLink
from airflow_provider_sky.operators.sky import SkyTaskOperator
from airflow_provider_sky.provision.console import console_url


def test_console_urls_per_cloud() -> None:
    aws = console_url("aws", "eu-west-1", "train-1")
    assert aws.startswith("https://eu-west-1.console.aws.amazon.com/ec2/home?region=eu-west-1")
    assert "tag:sky-cluster=train-1" in aws
    assert console_url("gcp", "us-central1", "x", {"project": "p-1"}).endswith("instances?project=p-1")
    assert "subscriptions/s/resourceGroups/rg" in console_url("azure", "eastus", "x", {"resource_group": "rg", "subscription_id": "s"})
    assert console_url("local", "local", "x") == ""


def test_operator_declares_the_link_and_returns_what_execution_recorded() -> None:
    op = SkyTaskOperator(task_id="t", run="true")
    assert any(isinstance(link, SkyClusterLink) for link in op.operator_extra_links)
    link = SkyClusterLink()
    assert link.get_link(op, ti_key=SimpleNamespace()) == ""
    op._sky_links = {"cluster": console_url("aws", "us-east-1", "c-1")}
    assert "us-east-1.console.aws.amazon.com" in link.get_link(op, ti_key=SimpleNamespace())
