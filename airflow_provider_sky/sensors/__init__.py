"""sensors layer of airflow-provider-sky."""
