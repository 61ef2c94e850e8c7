"""Reading the retrain job's config file (``mlops retrain --config FILE``): JSON or YAML, one
schema (`RetrainConfig`), a key given twice refused; and `config_digest`, the identity of a
config's content that a registered version records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pydantic
import yaml

from pulumi_mlops.runtime.retrain.config import RetrainConfig, redact_url
from pulumi_mlops.runtime.scheduler import parse_cron

__all__ = ["ConfigFileError", "config_digest", "load_job_config"]


class ConfigFileError(ValueError):
    """The config file is missing, not JSON or YAML, or breaks a rule; the message names the
    field."""


def load_job_config(path: str | os.PathLike[str]) -> RetrainConfig:
    """Read and validate a ``mlops-retrain/v1`` config file, JSON or YAML (one schema).

    A ``.json`` file is read as JSON and a ``.yaml``/``.yml`` file as YAML; any other name by
    its content (JSON when it starts with ``{``). A key given twice is refused in both.

    Raises:
        ConfigFileError: the file cannot be read, cannot be parsed, or is invalid; the message
            names each offending field (``gates.min.roc_auc``) and the rule.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigFileError(f"cannot read config file {str(path)!r}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"config file {str(path)!r} is not text (UTF-8): {err}") from err
    data = _parse_config(text, str(path))
    try:
        config = RetrainConfig.model_validate(data)
    except pydantic.ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(document)"
            got = e.get("input")
            if field == "dataset" and isinstance(got, str):
                got = redact_url(got)
            lines.append(f"`{field}`: {e['msg']} (got {got!r})" if e["loc"] else f"{e['msg']}")
        raise ConfigFileError(f"invalid config file {str(path)!r}:\n  " + "\n  ".join(lines)
                              ) from err
    if config.schedule is not None:
        try:
            parse_cron(config.schedule)
        except ValueError as err:
            raise ConfigFileError(f"invalid config file {str(path)!r}:\n  `schedule`: {err}"
                                  ) from None
    return config


def _parse_config(text: str, path: str) -> Any:
    suffix = Path(path).suffix.lower()
    as_yaml = suffix in (".yaml", ".yml") or (
        suffix != ".json" and not text.lstrip().startswith("{"))
    if not as_yaml:
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise ConfigFileError(f"config file {path!r} is not JSON: {err}") from err
        except _DuplicateKeyError as err:
            raise ConfigFileError(f"config file {path!r}: {err}") from err
    try:
        # A SafeLoader subclass: plain data only, no Python objects.
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigFileError(f"config file {path!r} is not valid YAML: {err.problem}{where}"
                              ) from err
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config file {path!r} is not valid YAML: {err}") from err
    except _DuplicateKeyError as err:
        raise ConfigFileError(f"config file {path!r}: {err}") from err
    if data is None:
        raise ConfigFileError(f"config file {path!r} is empty: it must be a mapping with at "
                              "least `model_name`, `dataset` and `estimator` (or `trainer`)")
    return data


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; in a config that hides a mistake.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"key {key!r} is given twice; keep one")
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader's own check reports it
            if key in seen:
                raise _DuplicateKeyError(f"key {key!r} is given twice (line "
                                         f"{key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def config_digest(config: RetrainConfig) -> str:
    """The sha256 (hex) of ``config``'s content, independent of its file's format and layout:
    equal for the same config written as JSON or YAML, different when any value changed."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
