"""clouds layer of airflow-provider-sky."""
