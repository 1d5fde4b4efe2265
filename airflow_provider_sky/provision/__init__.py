"""provision layer of airflow-provider-sky."""
