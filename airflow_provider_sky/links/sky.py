"""Extra links on sky tasks: the cluster's instances in the cloud console."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


class SkyClusterLink(BaseOperatorLink):
    """The cloud console page of the cluster the task ran on (computed on the worker at task end)."""

    name = "Sky cluster"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return getattr(operator, "_sky_links", {}).get("cluster", "")
