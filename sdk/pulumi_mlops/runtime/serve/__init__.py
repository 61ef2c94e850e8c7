"""`mlops serve`: the MLflow-compatible scoring server ModelService runs."""
