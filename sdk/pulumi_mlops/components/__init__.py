"""Component resources, one module each."""
