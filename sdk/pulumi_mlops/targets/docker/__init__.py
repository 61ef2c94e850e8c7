"""The Docker target (pulumi-docker): one module per component beside `_containers`."""
