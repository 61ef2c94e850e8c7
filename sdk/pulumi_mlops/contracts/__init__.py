"""What the components, the targets and the container runtime agree on, free of Pulumi.

Nothing here imports another part of the package or Pulumi (an import-linter contract in
``make test`` keeps it so): the runtime can import it without the SDK side, and a name changed
here changes on both sides at once.
"""
