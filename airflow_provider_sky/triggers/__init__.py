"""triggers layer of airflow-provider-sky."""
