"""Vectorised egress prices between the locations of one optimisation problem."""

from __future__ import annotations

import numpy as np

from airflow_provider_sky.catalog.egress import egress_cost, inter_region_price, internet_tiers, tiered_cost
from airflow_provider_sky.catalog.regions import continent_of

Place = tuple[str, str | None]
"""(cloud, region); region None = "somewhere in that cloud" (a bucket)."""


class EgressModel:
    """Egress cost and co-location between ``places``; matrices are built once, priced per GB volume."""

    def __init__(self, places: list[Place]):
        self.places = list(places)
        n = len(places)
        clouds = [c for c, _ in places]
        self.cloud = np.array(clouds, dtype=object)
        self.continent = [continent_of(c, r) for c, r in places]
        same_cloud = np.array([[clouds[i] == clouds[j] for j in range(n)] for i in range(n)], dtype=bool).reshape(n, n)
        same = np.zeros((n, n), dtype=bool)
        inter = np.zeros((n, n))
        for i, (ci, ri) in enumerate(places):
            for j, (cj, rj) in enumerate(places):
                if ci != cj:
                    continue
                if ci == "local" or ri is None or rj is None or ri == rj:
                    same[i, j] = True
                else:
                    inter[i, j] = inter_region_price(ci, ri, rj)
        self.same_cloud = same_cloud
        self.same_place = same
        self.inter_per_gb = inter
        tier_keys = [internet_tiers(c, r) for c, r in places]
        uniq = sorted(set(tier_keys))
        self._tier_tables = uniq
        self.tier_class = np.array([uniq.index(k) for k in tier_keys], dtype=np.int64)
        self._internet_cache: dict[float, np.ndarray] = {}

    def internet_cost(self, gb: float) -> np.ndarray:
        """Per place: cost of sending ``gb`` to another cloud."""
        cost = self._internet_cache.get(gb)
        if cost is None:
            per_class = np.array([tiered_cost(t, gb) for t in self._tier_tables])
            cost = per_class[self.tier_class] if len(self.tier_class) else np.zeros(0)
            self._internet_cache[gb] = cost
        return cost

    def cost_matrix(self, src: np.ndarray, dst: np.ndarray, gb: float) -> np.ndarray:
        """``[i, j]`` = cost of moving ``gb`` from place ``src[i]`` to place ``dst[j]``."""
        if gb <= 0:
            return np.zeros((len(src), len(dst)))
        sc = self.same_cloud[np.ix_(src, dst)]
        out = np.where(sc, gb * self.inter_per_gb[np.ix_(src, dst)], self.internet_cost(gb)[src][:, None])
        out[self.same_place[np.ix_(src, dst)]] = 0.0
        return out

    def cost(self, a: int, b: int, gb: float) -> float:
        """Cost of one transfer (same numbers as :meth:`cost_matrix`)."""
        (ca, ra), (cb, rb) = self.places[a], self.places[b]
        return egress_cost(ca, ra, cb, rb, gb)
