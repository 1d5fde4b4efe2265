"""spec layer of airflow-provider-sky."""
