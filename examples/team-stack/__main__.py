"""A team's stack: the platform stack owns the registry; the team reads its outputs.

The registry's tracking URI, the team's own registry user (the platform stack's
`registry.grant_write("team-fraud", ...)`: it writes the team's models and nothing else; never
the admin's), and the runtime image the platform built, cross stacks as StackReference outputs;
the password stays a Pulumi secret on the way. The team's
model service is declared here against that registry, on the platform's Kubernetes namespace.

`mlops plan --cwd examples/team-stack` plans it without the platform stack's state (its outputs
show as [computed], with a warning); `--stack-outputs FILE` stands values in for them (see
docs/plan-and-diff.md).
"""

import pulumi

import pulumi_mlops as mlops

config = pulumi.Config()
platform = pulumi.StackReference(config.require("platformStack"))

team = config.get("team") or "fraud"
registry = mlops.RegistryEndpoint(
    tracking_uri=platform.require_output("tracking_uri"),
    username=platform.require_output("team_registry_usernames").apply(lambda u: u[team]),
    # Arrives as a secret.
    password=platform.require_output("team_registry_passwords").apply(lambda p: p[team]),
)
target = mlops.KubernetesTarget(namespace=config.get("namespace") or "mlops")

fraud = mlops.ModelService(
    "fraud",
    registry=registry,
    target=target,
    # The runtime image the platform stack built and pushed (pinned by digest).
    image=platform.require_output("runtime_image"),
    model_uri="models:/fraud@champion",
    autoscaling=mlops.Autoscaling(min_replicas=3, max_replicas=10, target_cpu=70),
    # Without a Gateway the split follows replica counts: 1 canary beside 3 stable pods is 25%.
    rollout=mlops.Rollout.canary(model_uri="models:/fraud@challenger", weight=25),
)

pulumi.export("fraud_endpoint", fraud.endpoint)
pulumi.export("fraud_models", fraud.models)
