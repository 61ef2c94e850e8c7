"""A team's stack: the platform stack owns the registry; the team reads its outputs.

The registry's tracking URI and credentials cross stacks as StackReference outputs; the
password stays a Pulumi secret on the way. Model services and retrain schedules of the team are
declared here against that registry.
"""

import pulumi

config = pulumi.Config()
platform = pulumi.StackReference(config.require("platformStack"))

tracking_uri = platform.require_output("tracking_uri")
admin_password = platform.require_output("registry_admin_password")  # arrives as a secret

pulumi.export("registry", tracking_uri)
