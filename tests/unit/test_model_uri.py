"""The model-URI grammar (`pulumi_mlops.contracts.model_uri`): MLflow's own rules, checked
against MLflow's parser and validators, and ModelService's stricter deployable subset, checked
against the grammar ModelService had before it moved into the contract."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.utils.validation import _validate_model_alias_name, _validate_model_name

from pulumi_mlops.contracts.model_uri import (
    MODEL_URI_FIX,
    MODEL_URI_RULE,
    ModelRef,
    ModelUriError,
    parse_model_uri,
)

# ModelService's grammar before it moved into the contract (components/service.py), matched
# whole: `deployable=True` must accept exactly these URIs, with the same parts.
SERVICE_MODEL_URI = re.compile(
    r"models:/(?P<name>[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
    r"(/(?P<version>[1-9][0-9]{0,8})|@(?P<alias>[A-Za-z_][A-Za-z0-9_-]{0,62}))"
)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# Names MLflow's registry accepts (no '/' or ':', not blank, not '.', not starting with '..').
# Tab, CR and LF are left out: urllib drops them from a URI before MLflow sees its path.
mlflow_names = st.text(
    st.characters(exclude_characters="/:\t\r\n", exclude_categories=("Cs",)), min_size=1,
    max_size=30,
).filter(lambda n: bool(n.strip()) and n != "." and not n.startswith(".."))
mlflow_versions = st.integers(min_value=0, max_value=10**12).map(str) | st.from_regex(
    r"0[0-9]{1,4}", fullmatch=True)
mlflow_aliases = st.from_regex(r"[\w-]{1,40}", fullmatch=True)

deployable_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
deployable_versions = st.integers(min_value=1, max_value=999_999_999).map(str)
deployable_aliases = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,62}", fullmatch=True)

# The characters that decide a model URI's parse, and a few that must not.
_tricky_part = st.text(st.sampled_from("aZ09._- @:/é#²"), max_size=8)
tricky = _tricky_part | st.builds("{}{}{}".format, _tricky_part, st.sampled_from("/@"),
                                  _tricky_part)


# --------------------------------------------------------------------------- MLflow's grammar


@given(name=mlflow_names, version=mlflow_versions)
@example(name="fraud@eu", version="3")  # '@' in a name: the version form has no alias
@example(name="Fraud Model", version="007")
def test_a_version_uri_parses_to_its_parts(name: str, version: str) -> None:
    uri = f"models:/{name}/{version}"

    assert parse_model_uri(uri) == ModelRef(uri, name, version, None)


@given(name=mlflow_names, alias=mlflow_aliases)
@example(name="fraud@eu", alias="champion")  # the alias follows the last '@', as in MLflow
@example(name="m", alias="latest")  # MLflow's registry answers it with the newest version
def test_an_alias_uri_parses_to_its_parts(name: str, alias: str) -> None:
    uri = f"models:/{name}@{alias}"

    assert parse_model_uri(uri) == ModelRef(uri, name, None, alias)


def _mlflow_parts(uri: str) -> tuple[str, str | None, str | None] | None:
    """What MLflow makes of ``uri``: (name, version, alias) when it names a version or an
    alias that its registry could hold, else None."""
    try:
        parsed = _parse_model_uri(uri)
        if parsed.version is None and parsed.alias is None:
            return None  # a stage, 'latest' or a model id
        assert parsed.name is not None
        _validate_model_name(parsed.name)
        if parsed.alias is not None:
            _validate_model_alias_name(parsed.alias)
        if parsed.version is not None:
            int(parsed.version)
    except (MlflowException, ValueError):
        return None
    return parsed.name, parsed.version, parsed.alias


@given(rest=tricky | st.builds("{}{}{}".format, mlflow_names, st.sampled_from("/@"),
                               mlflow_versions | mlflow_aliases))
@example(rest="a/b/3")
@example(rest="a@b@c")
@example(rest="..a/1")
@example(rest="a:b/1")
@example(rest=" /1")
@example(rest="a/latest")
@example(rest="a@")
def test_a_uri_parses_exactly_when_mlflow_parses_it_to_a_version_or_an_alias(rest: str) -> None:
    uri = "models:/" + rest
    # MLflow reads 'models://host/…' as a network location and '?…' as a query and ignores
    # both, and takes any number of slashes after 'models:': such spellings are not model URIs
    # here.
    assume(not rest.startswith("/") and "?" not in rest)
    expected = _mlflow_parts(uri)
    try:
        ref = parse_model_uri(uri)
    except ModelUriError:
        assert expected is None, f"MLflow reads {uri!r} as {expected}"
        return
    assert (ref.name, ref.version, ref.alias) == expected


@pytest.mark.parametrize(("uri", "reason"), [
    ("runs:/abc/model", "does not start with models:/"),
    ("models:/fraud", "names neither a version nor an alias"),
    ("models:/fraud/", "the version '' is not a number"),
    ("models:/fraud/latest", "the version 'latest' is not a number"),
    ("models:/fraud/Production", "the version 'Production' is not a number"),
    ("models:/fraud/\u0663", "is not a number"),  # a digit, but not one a registry assigns
    ("models:/fraud/7\n", "is not a number"),
    ("models:/fraud/7/extra", "more than a name and a version"),
    ("models:/fraud@", "the alias '' is not 1 to 255"),
    ("models:/fraud@champ ion", "the alias 'champ ion'"),
    ("models:/fraud@" + "a" * 256, "is not 1 to 255"),
    ("models:/@champion", "the model name is empty"),
    ("models:/ /7", "the model name is empty"),
    ("models:/a:b/7", "contains ':'"),
    ("models:/../7", "would resolve to another path"),
    ("models:/./7", "would resolve to another path"),
])
def test_other_strings_are_refused_with_the_rule_the_reason_and_the_fix(
        uri: str, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_model_uri(uri)

    assert isinstance(raised.value, ModelUriError)
    message = str(raised.value)
    assert repr(uri)[:50] in message and reason in message
    assert MODEL_URI_RULE in message and MODEL_URI_FIX in message
    assert (raised.value.rule, raised.value.fix, raised.value.uri) == (
        MODEL_URI_RULE, MODEL_URI_FIX, uri)


def test_a_string_is_required() -> None:
    with pytest.raises(ModelUriError, match="it is a int, not a string"):
        parse_model_uri(7)  # type: ignore[arg-type]


def test_a_long_uri_is_cut_in_the_message() -> None:
    with pytest.raises(ModelUriError) as raised:
        parse_model_uri("models:/" + "x" * 5000)

    assert len(str(raised.value)) < 500


# --------------------------------------------------------------------------- deployable


@given(rest=tricky | st.builds("{}{}{}".format, deployable_names, st.sampled_from("/@"),
                               deployable_versions | deployable_aliases))
@example(rest="fraud/7")
@example(rest="fraud/07")
@example(rest="-fraud/1")
@example(rest="f@1st")
@example(rest="fraud @x")
def test_deployable_uris_are_those_model_service_accepted(rest: str) -> None:
    uri = "models:/" + rest
    match = SERVICE_MODEL_URI.fullmatch(uri)
    try:
        ref = parse_model_uri(uri, deployable=True)
    except ModelUriError:
        assert match is None
        return
    assert match is not None
    assert (ref.name, ref.version, ref.alias) == (match["name"], match["version"], match["alias"])


@given(rest=tricky | st.builds("{}{}{}".format, mlflow_names, st.sampled_from("/@"),
                               mlflow_versions | mlflow_aliases))
def test_every_deployable_uri_is_a_model_uri_with_the_same_parts(rest: str) -> None:
    uri = "models:/" + rest
    try:
        deployable = parse_model_uri(uri, deployable=True)
    except ModelUriError:
        return
    assert parse_model_uri(uri) == deployable


@pytest.mark.parametrize(("uri", "reason"), [
    ("models:/Fraud Model/7", "is not 1 to 63 ASCII letters"),
    ("models:/" + "a" * 64 + "/7", "is not 1 to 63 ASCII letters"),
    ("models:/fraud./7", "starting and ending with a letter or digit"),
    ("models:/fraud/07", "without leading zeros"),
    ("models:/fraud/0", "from 1 to 999999999"),
    ("models:/fraud/1234567890", "from 1 to 999999999"),
    ("models:/fraud@1st", "starting with a letter or '_'"),
    ("models:/fraud@" + "a" * 64, "is not 1 to 63 ASCII letters"),
    ("models:/fraud@champiön", "ASCII"),
])
def test_model_uris_that_cannot_be_deployed_are_refused_when_deploying(
        uri: str, reason: str) -> None:
    parse_model_uri(uri)  # a model URI all the same

    with pytest.raises(ModelUriError, match=re.escape(reason)):
        parse_model_uri(uri, deployable=True)


# --------------------------------------------------------------------------- ModelRef


@given(name=deployable_names, version=deployable_versions)
def test_a_version_uri_serves_itself_under_its_version_key(name: str, version: str) -> None:
    uri = f"models:/{name}/{version}"

    ref = parse_model_uri(uri, deployable=True)

    assert ref.serving_uri == uri
    assert ref.key == f"v{version}"


@given(name=mlflow_names, alias=mlflow_aliases, version=st.none() | deployable_versions)
def test_an_alias_is_served_pinned_when_resolved_and_as_given_otherwise(
        name: str, alias: str, version: str | None) -> None:
    uri = f"models:/{name}@{alias}"
    ref = ModelRef(uri, name, version, alias)

    assert ref.serving_uri == (f"models:/{name}/{version}" if version else uri)
    assert parse_model_uri(ref.serving_uri).name == name


@given(alias=mlflow_aliases)
@example(alias="a" * 19 + "-b")  # cut right after a '-'
@example(alias="__")  # nothing left of it
def test_an_unresolved_alias_keys_a_short_dns_label(alias: str) -> None:
    key = ModelRef(f"models:/m@{alias}", "m", None, alias).key

    assert DNS_LABEL.fullmatch(key), key
    assert len(key) <= 20


def test_a_model_ref_is_frozen_and_compares_by_value() -> None:
    ref = parse_model_uri("models:/fraud@champion")

    assert ref == ModelRef("models:/fraud@champion", "fraud", None, "champion")
    with pytest.raises(AttributeError):
        ref.version = "7"  # type: ignore[misc]
