"""cli layer of airflow-provider-sky."""
