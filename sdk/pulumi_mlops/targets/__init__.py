"""Materializers: a component's plan declared as one target's resources.

``targets/kubernetes/<component>.py`` and ``targets/docker/<component>.py`` each export
``materialize(parent, plan, target, secret_data[, network, after])``, returning the children
as a typed value. They read plans only, never args or components.
"""
