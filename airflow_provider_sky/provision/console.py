"""Links to a cluster's instances in its cloud's web console (empty where there is none)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


def console_url(cloud: str | None, region: str | None, cluster_name: str, extra: Mapping[str, Any] | None = None) -> str:
    """The console page listing the cluster's instances; '' for the local backend and SSH pools."""
    extra = extra or {}
    name = quote(cluster_name, safe="")
    if cloud == "aws" and region:
        return (
            f"https://{region}.console.aws.amazon.com/ec2/home?region={region}"
            f"#Instances:tag:sky-cluster={name};v=3"
        )
    if cloud == "gcp":
        project = extra.get("project")
        query = f"?project={quote(str(project), safe='')}" if project else ""
        return f"https://console.cloud.google.com/compute/instances{query}"
    if cloud == "azure":
        group = extra.get("resource_group")
        subscription = extra.get("subscription_id")
        if group and subscription:
            return (
                f"https://portal.azure.com/#@/resource/subscriptions/{subscription}"
                f"/resourceGroups/{group}/overview"
            )
        return "https://portal.azure.com/#browse/Microsoft.Compute%2FVirtualMachines"
    return ""
