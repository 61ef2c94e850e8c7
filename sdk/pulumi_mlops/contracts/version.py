"""This package's version, which the runtime reports and the components pin images to."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("pulumi-mlops")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
