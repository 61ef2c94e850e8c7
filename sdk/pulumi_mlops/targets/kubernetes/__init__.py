"""The Kubernetes target (pulumi-kubernetes): one module per component beside `_objects`."""
