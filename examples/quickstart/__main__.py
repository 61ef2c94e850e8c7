"""Quickstart: an MLflow registry (auth on, artifacts proxied) on local Docker."""

import pulumi

import pulumi_mlops as mlops

registry = mlops.ModelRegistry("registry", target=mlops.DockerTarget())

pulumi.export("tracking_uri", registry.tracking_uri)
pulumi.export("admin_username", registry.admin_username)
# A secret: read it with `pulumi stack output --show-secrets`.
pulumi.export("admin_password", registry.admin_password)
