"""state layer of airflow-provider-sky."""
