"""Map cloud regions to continents (the unit egress prices are quoted in)."""

from __future__ import annotations

import functools

NORTH_AMERICA = "na"
SOUTH_AMERICA = "sa"
EUROPE = "eu"
ASIA = "asia"
OCEANIA = "oc"
MIDDLE_EAST = "me"
AFRICA = "af"
LOCAL = "local"

CONTINENTS = (NORTH_AMERICA, SOUTH_AMERICA, EUROPE, ASIA, OCEANIA, MIDDLE_EAST, AFRICA, LOCAL)

# Prefix rules for AWS and GCP region names (first match wins).
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("us-", NORTH_AMERICA),
    ("ca-", NORTH_AMERICA),
    ("mx-", NORTH_AMERICA),
    ("northamerica-", NORTH_AMERICA),
    ("sa-", SOUTH_AMERICA),
    ("southamerica-", SOUTH_AMERICA),
    ("eu-", EUROPE),
    ("europe-", EUROPE),
    ("ap-southeast-2", OCEANIA),
    ("ap-southeast-4", OCEANIA),
    ("ap-southeast-6", OCEANIA),
    ("australia-", OCEANIA),
    ("ap-", ASIA),
    ("asia-", ASIA),
    ("me-", MIDDLE_EAST),
    ("il-", MIDDLE_EAST),
    ("af-", AFRICA),
    ("africa-", AFRICA),
)

# Substring rules for Azure region names such as "westeurope" or "japaneast".
_AZURE_WORDS: tuple[tuple[str, str], ...] = (
    ("brazil", SOUTH_AMERICA),
    ("chile", SOUTH_AMERICA),
    ("southafrica", AFRICA),
    ("australia", OCEANIA),
    ("newzealand", OCEANIA),
    ("uae", MIDDLE_EAST),
    ("qatar", MIDDLE_EAST),
    ("israel", MIDDLE_EAST),
    ("saudi", MIDDLE_EAST),
    ("europe", EUROPE),
    ("uk", EUROPE),
    ("france", EUROPE),
    ("germany", EUROPE),
    ("norway", EUROPE),
    ("sweden", EUROPE),
    ("switzerland", EUROPE),
    ("poland", EUROPE),
    ("italy", EUROPE),
    ("spain", EUROPE),
    ("austria", EUROPE),
    ("belgium", EUROPE),
    ("denmark", EUROPE),
    ("finland", EUROPE),
    ("greece", EUROPE),
    ("asia", ASIA),
    ("japan", ASIA),
    ("korea", ASIA),
    ("india", ASIA),
    ("indonesia", ASIA),
    ("malaysia", ASIA),
    ("taiwan", ASIA),
    ("canada", NORTH_AMERICA),
    ("mexico", NORTH_AMERICA),
    ("us", NORTH_AMERICA),
)


@functools.lru_cache(maxsize=4096)
def continent_of(cloud: str, region: str | None) -> str:
    """Continent code of a region; North America when the name is unknown or missing."""
    if cloud == "local":
        return LOCAL
    if not region:
        return NORTH_AMERICA
    name = region.lower()
    if cloud == "azure":
        for word, continent in _AZURE_WORDS:
            if word in name:
                return continent
        return NORTH_AMERICA
    for prefix, continent in _PREFIXES:
        if name.startswith(prefix):
            return continent
    return NORTH_AMERICA
