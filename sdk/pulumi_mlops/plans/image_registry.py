"""Where container images are pushed to and pulled from: an OCI image registry."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import ArgsModel, Secret, check_secret_input
from pulumi_mlops.errors import PATTERN_DESCRIPTIONS, InputError

__all__ = ["IMAGE_PATH", "ImageRegistry", "check_registry_server"]

# One or more repository path components, as the OCI distribution spec defines them.
IMAGE_PATH = (
    r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
)
PATTERN_DESCRIPTIONS[IMAGE_PATH] = (
    "an image repository path: lowercase letters, digits and '.', '_', '-' between them, "
    "components separated by '/', e.g. 'ml-platform/serving'"
)

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ImageRegistry(ArgsModel):
    """An image registry components push images to (and clusters pull them from).

    Attributes:
        server: Registry host, with a port when it is not 443, e.g. ``registry.example.com``
            or ``localhost:5000``. No scheme, no path.
        namespace: Path under the server that images go to, e.g. ``ml-platform``.
            Default: none, images sit directly under the server.
        username: User to push as. Default: none, the Docker engine's own credentials
            (``docker login``, credential helpers) are used.
        password: Password or token of ``username``; kept a Pulumi secret. Required with
            ``username``.
    """

    server: str
    namespace: Annotated[str, Field(pattern=IMAGE_PATH, max_length=200)] | None = None
    username: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    password: Secret[Any] = None

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        check_registry_server(value)
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: Any) -> Any:
        return check_secret_input(value, _check_password)

    @model_validator(mode="after")
    def _credentials_together(self) -> ImageRegistry:
        if (self.username is None) != (self.password is None):
            missing, given = (
                ("password", "username") if self.password is None else ("username", "password"))
            raise InputError(
                f"is required with `{given}`",
                "pass both `username` and `password`, or neither to use the Docker engine's "
                "own credentials.",
                field=missing,
                related=(given,),
            )
        return self

    def repository(self, name: str) -> str:
        """The full repository of an image called ``name`` in this registry (no tag)."""
        return "/".join(p for p in (self.server, self.namespace, name) if p)


def _check_password(password: str) -> None:
    if not password:
        raise InputError("must not be empty", "pass the registry password or token as a secret.")


def check_registry_server(server: str) -> None:
    """A registry host as image references spell it: ``host[:port]``, lowercase, no scheme.

    Docker reads the first path component of an image reference as a registry only when it
    has a dot or a port or is ``localhost``; anything else would silently name a namespace on
    the default registry, so such hosts are refused.
    """
    example = "e.g. 'registry.example.com' or 'localhost:5000'"
    if "://" in server:
        raise InputError("must be a host without a scheme",
                         f"drop {server.split('://', 1)[0] + '://'!r}: {example}.")
    if "/" in server:
        raise InputError("must be a host without a path",
                         f"put the path in `namespace` and keep the host here, {example}.")
    bare_ipv6 = server.startswith("[") and server.endswith("]")
    host, has_port, port = (
        server.rpartition(":") if ":" in server and not bare_ipv6 else (server, "", ""))
    if has_port and not (port.isdigit() and 0 < int(port) < 65536):
        raise InputError("must have a port between 1 and 65535", f"use a host like {example}.")
    if not _is_host(host):
        raise InputError("must be a lowercase host name or IP address", f"use {example}.")
    if "." not in host and not has_port and host != "localhost":
        raise InputError(
            "must have a dot or a port, or be 'localhost' (otherwise image references read it "
            "as a namespace on the default registry)",
            f"use the registry's full host name, {example}.",
        )


def _is_host(host: str) -> bool:
    if _DNS_NAME.match(host) and len(host) <= 253:
        return True
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True
