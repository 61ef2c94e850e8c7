"""Resolving a model alias to a version at preview, so that moving an alias shows up as a
diff: `RegistryResolver` asks the registry over MLflow's REST API (the client the serving
runtime uses, `pulumi_mlops.runtime.mlflow_rest.RestRegistry`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pulumi_mlops.errors import InputError

__all__ = ["ModelResolver", "RegistryResolver", "registry_resolver"]

ModelResolver = Callable[[str, str], str | None]
"""Resolves ``(model name, alias)`` to a version; None when the registry cannot be reached. A
resolver may also have a ``promotion(name, alias)`` method, as `RegistryResolver` does: what
the resolved version's tags say about serving it through the alias
(`pulumi_mlops.contracts.lineage.promotion_record`), for `ModelService`'s
``model_promotions`` output and the ``promotion-approved`` policy."""


class RegistryResolver:
    """A resolver asking a registry over its REST API: ``resolver(name, alias)`` is the version,
    or None when the registry cannot be reached; an alias or model the registry does not know
    raises `InputError`.

    Args:
        tracking_uri: The registry, reachable from where Pulumi runs. Default:
            ``MLFLOW_TRACKING_URI`` of the environment.
        timeout: Seconds per request.
        environ: Where ``MLFLOW_TRACKING_*`` come from. Default: ``os.environ``.
    """

    def __init__(self, tracking_uri: str | None = None, *, timeout: float = 5.0,
                 environ: Mapping[str, str] | None = None) -> None:
        import os

        self._env = dict(os.environ if environ is None else environ)
        if tracking_uri is not None:
            self._env["MLFLOW_TRACKING_URI"] = tracking_uri
        self._timeout = timeout
        self._resolved: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}

    @property
    def registry(self) -> str | None:
        """The registry asked, without credentials or query (for messages); None when
        ``MLFLOW_TRACKING_URI`` is not set."""
        import urllib.parse

        uri = self._env.get("MLFLOW_TRACKING_URI")
        if not uri:
            return None
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def why_unresolved(self) -> str:
        """Why an alias could not be resolved (for the warning that says so)."""
        import urllib.parse

        from pulumi_mlops.runtime.mlflow_rest import RestRegistry

        if not self.registry:
            return "no registry configured: MLFLOW_TRACKING_URI is unset"
        if RestRegistry.from_env(self._env) is None:  # what `__call__` asks
            scheme = urllib.parse.urlsplit(self._env["MLFLOW_TRACKING_URI"]).scheme
            return (f"MLFLOW_TRACKING_URI is a {scheme or 'local'} store or needs an auth "
                    "plugin, not a registry server the resolver can ask over HTTP")
        return f"the registry at {self.registry} is unreachable or refused the credentials"

    def __call__(self, name: str, alias: str) -> str | None:
        from http.client import HTTPException

        from pulumi_mlops.runtime.mlflow_rest import RegistryError, RestRegistry

        client = RestRegistry.from_env(self._env)
        if client is None:
            return None
        client = RestRegistry(client.base_url, client.headers, client.context, self._timeout)
        try:
            found = client.model_version(name, alias=alias)
            version = str(found["version"])
            tags = {str(t["key"]): str(t.get("value", "")) for t in found.get("tags") or []}
            self._resolved[(name, alias)] = (version, tags)
            return version
        except RegistryError as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise InputError(f"names alias {alias!r} of model {name!r}, which the registry "
                                 f"at {self.registry} does not have", "set the alias in the "
                                 "registry, or pin a version: 'models:/<name>/<version>'."
                                 ) from None
            return None
        except (OSError, HTTPException, ValueError, KeyError):
            # Not reachable, or not an MLflow server answering (a proxy's login page, another
            # service on that port): as good as unreachable.
            return None

    def promotion(self, name: str, alias: str) -> dict[str, str | bool | None] | None:
        """What the version ``alias`` resolved to carries about being served through it
        (`~pulumi_mlops.contracts.lineage.promotion_record`); None when it was not resolved."""
        from pulumi_mlops.contracts.lineage import promotion_record

        resolved = self._resolved.get((name, alias))
        return None if resolved is None else promotion_record(resolved[0], alias, resolved[1])


def registry_resolver(tracking_uri: str | None = None, *, timeout: float = 5.0,
                      environ: Mapping[str, str] | None = None) -> RegistryResolver:
    """A `RegistryResolver` (kept for programs that call this name)."""
    return RegistryResolver(tracking_uri, timeout=timeout, environ=environ)
