"""catalog layer of airflow-provider-sky."""
