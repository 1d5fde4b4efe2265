"""optimizer layer of airflow-provider-sky."""
