"""execution layer of airflow-provider-sky."""
