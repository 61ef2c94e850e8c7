"""The model URIs that name a registered model version: ``models:/<name>/<version>`` and
``models:/<name>@<alias>``.

`parse_model_uri` follows MLflow's own rules, so that every registered model MLflow can hold
parses (the serving runtime must load them all):

- the name is what MLflow's registry accepts: not blank, no ``/`` or ``:``, not ``.`` and not
  starting with ``..`` (MLflow refuses names that a path would resolve elsewhere); it may
  contain ``@``, and an alias is what follows the last ``@``, as MLflow splits it;
- the version is a number (ASCII digits);
- the alias is 1 to 255 letters, digits, ``_`` or ``-`` (MLflow's alias rule). ``@latest``
  is an alias: MLflow's registry answers it with the newest version.

Other ``models:/`` forms MLflow knows (``models:/<name>/<stage>``, ``models:/<name>/latest``,
``models:/<model id>``) name no fixed version and no alias, and are not model URIs here; nor
are the spellings MLflow's URL parsing lets through (``models:///<name>/7``, a ``?query``, a
tab or newline inside), nor a version in other scripts' digits.

``deployable=True`` adds what ModelService needs of a URI it deploys, whose name becomes a
Kubernetes label value and whose version or alias a Deployment's name: a name of 1 to 63
ASCII letters, digits, ``-``, ``_`` or ``.`` starting and ending with a letter or digit; a
version of 1 to 9 digits without a leading zero; an alias of 1 to 63 ASCII letters, digits,
``_`` or ``-`` starting with a letter or ``_``. Every deployable URI is a model URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MODEL_URI_FIX", "MODEL_URI_RULE", "ModelRef", "ModelUriError", "parse_model_uri"]

MODEL_URI_RULE = "must be models:/<name>/<version> or models:/<name>@<alias>"
"""What a model URI must be, for error messages."""
MODEL_URI_FIX = "use e.g. 'models:/fraud/7' or 'models:/fraud@champion'."
"""How to write one, for error messages."""

_SCHEME = "models:/"
# ASCII digits: `\d` and str.isdigit also take other scripts' digits, which no registry assigns.
_VERSION = re.compile(r"[0-9]+")
# MLflow's alias rule (mlflow.utils.validation: `^[\w\-]*$`, at most 255 characters, not empty).
_ALIAS = re.compile(r"[\w-]{1,255}")
_DEPLOYABLE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DEPLOYABLE_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_DEPLOYABLE_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_SHOWN = 200  # characters of a bad URI an error message repeats


class ModelUriError(ValueError):
    """A string that is not a model URI.

    Attributes:
        uri: What was given.
        reason: What is wrong with it.
        rule: `MODEL_URI_RULE`.
        fix: `MODEL_URI_FIX`.
    """

    def __init__(self, uri: object, reason: str) -> None:
        shown = repr(uri)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN - 1] + "…"
        super().__init__(f"model URI {shown} {MODEL_URI_RULE}: {reason}. Fix: {MODEL_URI_FIX}")
        self.uri = uri
        self.reason = reason
        self.rule = MODEL_URI_RULE
        self.fix = MODEL_URI_FIX


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` URI, pinned to a version when it could be.

    Attributes:
        uri: The URI as given.
        name: Registered model name.
        version: The version (given, or resolved from the alias); None if unresolved.
        alias: The alias the URI named, if any.
    """

    uri: str
    name: str
    version: str | None
    alias: str | None

    @property
    def serving_uri(self) -> str:
        """What the server is told to load: the pinned version when known."""
        return f"models:/{self.name}/{self.version}" if self.version else self.uri

    @property
    def key(self) -> str:
        """A DNS-label-safe key: ``v<version>``, or the alias when unresolved."""
        if self.version:
            return f"v{self.version}"
        # Cut before stripping, so that the key never ends with '-'.
        key = re.sub(r"[^a-z0-9-]", "-", (self.alias or "").lower())[:20].strip("-")
        return key or "alias"


def parse_model_uri(uri: str, *, deployable: bool = False) -> ModelRef:
    """Parse ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` (see the module's
    description for the rules).

    Args:
        uri: The URI.
        deployable: Also require what ModelService needs of a URI it deploys (a name that is
            a Kubernetes label value, a version of at most 9 digits without a leading zero, an
            alias of at most 63 characters starting with a letter or ``_``). Default: MLflow's
            rules only.

    Raises:
        ModelUriError: (a ValueError) for anything else; its message names the URI, the rule,
            what is wrong and how to fix it.
    """
    if not isinstance(uri, str):
        raise ModelUriError(uri, f"it is a {type(uri).__name__}, not a string")
    if not uri.startswith(_SCHEME):
        raise ModelUriError(uri, f"it does not start with {_SCHEME}")
    path = uri[len(_SCHEME):]
    version: str | None = None
    alias: str | None = None
    if "/" in path:
        name, _, version = path.partition("/")
        if "/" in version:
            raise ModelUriError(uri, "it has more than a name and a version")
        if not _VERSION.fullmatch(version):
            raise ModelUriError(uri, f"the version {version!r} is not a number (a stage or "
                                "'latest' names no fixed version)")
    elif "@" in path:
        name, _, alias = path.rpartition("@")
        if not _ALIAS.fullmatch(alias):
            raise ModelUriError(uri, f"the alias {alias!r} is not 1 to 255 letters, digits, "
                                "'_' or '-'")
    else:
        raise ModelUriError(uri, "it names neither a version nor an alias")
    _check_name(uri, name)
    if deployable:
        _check_deployable(uri, name, version, alias)
    return ModelRef(uri, name, version, alias)


def _check_name(uri: str, name: str) -> None:
    """MLflow's rules for a registered model's name (mlflow.utils.validation)."""
    if not name.strip():
        raise ModelUriError(uri, "the model name is empty")
    if ":" in name:
        raise ModelUriError(uri, f"the model name {name!r} contains ':', which MLflow refuses")
    if name == "." or name.startswith(".."):
        raise ModelUriError(uri, f"the model name {name!r} would resolve to another path, "
                            "which MLflow refuses")


def _check_deployable(uri: str, name: str, version: str | None, alias: str | None) -> None:
    if not _DEPLOYABLE_NAME.fullmatch(name):
        raise ModelUriError(uri, f"the model name {name!r} is not 1 to 63 ASCII letters, "
                            "digits, '-', '_' or '.' starting and ending with a letter or digit "
                            "(it becomes a Kubernetes label value)")
    if version is not None and not _DEPLOYABLE_VERSION.fullmatch(version):
        raise ModelUriError(uri, f"the version {version!r} is not a number from 1 to "
                            "999999999 written without leading zeros")
    if alias is not None and not _DEPLOYABLE_ALIAS.fullmatch(alias):
        raise ModelUriError(uri, f"the alias {alias!r} is not 1 to 63 ASCII letters, digits, "
                            "'_' or '-' starting with a letter or '_'")
