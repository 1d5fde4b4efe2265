"""catalog layer of airflow-provider-sky: cloud offerings, prices, egress; no airflow imports."""

from airflow_provider_sky.catalog.egress import EGRESS_PRICES_DATE, Location, egress_cost, egress_price_per_gb
from airflow_provider_sky.catalog.index import Catalog
from airflow_provider_sky.catalog.loader import DEFAULT_CATALOG_DIR, default_catalog, load_catalog
from airflow_provider_sky.catalog.offerings import Offering, OfferingTable
from airflow_provider_sky.catalog.query import OfferingQuery
from airflow_provider_sky.catalog.v8 import CatalogFormatError, load_v8_dir, read_vms_csv

__all__ = [
    "DEFAULT_CATALOG_DIR",
    "EGRESS_PRICES_DATE",
    "Catalog",
    "CatalogFormatError",
    "Location",
    "Offering",
    "OfferingQuery",
    "OfferingTable",
    "default_catalog",
    "egress_cost",
    "egress_price_per_gb",
    "load_catalog",
    "load_v8_dir",
    "read_vms_csv",
]
