"""airflow-provider-sky: run Airflow tasks on the cheapest or fastest cloud, region and instance."""

__version__ = "0.1.0"
