"""Pure helpers for EC2 instances: identity tags, node order, idempotency tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

CLUSTER_TAG = "sky-cluster"
RANK_TAG = "sky-node-rank"
LIVE_STATES = ("pending", "running", "stopping", "stopped")


def client_token(
    cluster_name: str,
    region: str,
    zone: str | None,
    instance_type: str,
    use_spot: bool,
    num_nodes: int,
    attempt: int | str,
    image_id: str = "",
) -> str:
    """Deterministic RunInstances ClientToken (at most 64 ASCII characters).

    EC2 remembers a token even after its instances are terminated, so `attempt` must never repeat
    for a cluster name (failover uses the state store's attempt counter)."""
    key = "|".join(map(str, (cluster_name, region, zone, instance_type, use_spot, num_nodes, attempt, image_id)))
    return "sky-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def tag_value(instance: Mapping[str, Any], key: str) -> str | None:
    """The value of tag `key` on a described instance."""
    for tag in instance.get("Tags") or ():
        if tag["Key"] == key:
            return tag["Value"]
    return None


def rank_key(instance: Mapping[str, Any]) -> tuple[int, int, str]:
    """Sort key: the rank tag (head = 0), else the launch index, then the id."""
    rank = tag_value(instance, RANK_TAG)
    return (
        int(rank) if rank and rank.isdigit() else 1 << 30,
        int(instance.get("AmiLaunchIndex") or 0),
        instance["InstanceId"],
    )


def clean_tags(tags: Mapping[str, Any]) -> list[dict[str, str]]:
    """EC2 tag list: no None values, no reserved ``aws:`` keys, lengths within EC2 limits."""
    out = []
    for key, value in tags.items():
        if value is None or str(key).lower().startswith("aws:"):
            continue
        out.append({"Key": str(key)[:128], "Value": str(value)[:256]})
    return out
