"""storage layer of airflow-provider-sky."""
