"""Code that runs inside the workload containers (model server, retrain job, drift); no Pulumi."""
