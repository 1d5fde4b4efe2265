"""links layer of airflow-provider-sky."""
