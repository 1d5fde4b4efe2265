"""hooks layer of airflow-provider-sky."""
