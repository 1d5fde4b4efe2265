"""operators layer of airflow-provider-sky."""
