"""Stack plans (what a stack declares, secrets redacted) and their diff, as pure functions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulumi_mlops.render import record
from pulumi_mlops.render.diff import (
    ABSENT,
    FieldChange,
    Named,
    StackPlanDiff,
    apply_changes,
    diff_stack_plans,
    diff_values,
    path_text,
)
from pulumi_mlops.render.diff_format import diff_json, format_markdown, format_text
from pulumi_mlops.render.stack_plan import (
    STACK_PLAN_FORMAT,
    PlanFormatError,
    build_stack_plan,
    dump_stack_plan,
    parse_stack_plan,
)

THING = "test:index:Thing"


def _program() -> None:
    group = pulumi.ComponentResource("test:index:Group", "group")
    other = pulumi.ComponentResource("test:index:Other", "other")
    pulumi.CustomResource(THING, "plain", {
        "replicas": 2.0,
        "labels": {"app.kubernetes.io/name": "fraud", "model-version": "7"},
    })
    pulumi.CustomResource(THING, "holder", {
        "password": pulumi.Output.secret("hunter2-but-longer"),
        "stringData": pulumi.Output.secret({"admin-password": "s3cret-value-123"}),
        "nested": {"token": pulumi.Output.secret("tok-0123456789")},
    }, opts=pulumi.ResourceOptions(parent=group))
    # Same type and name under parents of different types: distinct URNs, one plan key each.
    pulumi.CustomResource(THING, "child", {"n": 1}, opts=pulumi.ResourceOptions(parent=group))
    pulumi.CustomResource(THING, "child", {"n": 2}, opts=pulumi.ResourceOptions(parent=other))
    pulumi.export("password", pulumi.Output.secret("exported-secret-1"))
    pulumi.export("url", "http://fraud:8080")


def _plan() -> dict[str, Any]:
    return build_stack_plan(record(_program, project="proj", stack="qa"))


# --- the plan document -----------------------------------------------------------------------


def test_plan_keys_resources_by_type_and_name_with_their_parent_key() -> None:
    plan = _plan()

    assert plan["format"] == STACK_PLAN_FORMAT
    assert (plan["project"], plan["stack"]) == ("proj", "qa")
    plain = plan["resources"][f"{THING}::plain"]
    assert plain["parent"] is None
    assert plain["inputs"] == {
        "replicas": 2, "labels": {"app.kubernetes.io/name": "fraud", "model-version": "7"}}
    assert plan["resources"][f"{THING}::holder"]["parent"] == "test:index:Group::group"
    assert plan["resources"]["test:index:Group::group"]["custom"] is False


def test_resources_sharing_type_and_name_are_told_apart_by_their_parent_type() -> None:
    resources = _plan()["resources"]

    assert resources[f"test:index:Group${THING}::child"]["inputs"] == {"n": 1}
    assert resources[f"test:index:Other${THING}::child"]["inputs"] == {"n": 2}
    assert f"{THING}::child" not in resources


def test_plan_shows_secrets_as_redacted_and_keeps_a_secret_mappings_keys() -> None:
    plan = _plan()
    text = dump_stack_plan(plan)

    holder = plan["resources"][f"{THING}::holder"]["inputs"]
    assert holder == {"password": "[secret]", "stringData": {"admin-password": "[secret]"},
                      "nested": {"token": "[secret]"}}
    assert plan["outputs"] == {"password": "[secret]", "url": "http://fraud:8080"}
    for secret in ("hunter2-but-longer", "s3cret-value-123", "tok-0123456789",
                   "exported-secret-1"):
        assert secret not in text


def test_two_plans_of_the_same_program_are_byte_identical() -> None:
    assert dump_stack_plan(_plan()) == dump_stack_plan(_plan())


def test_encrypted_config_is_kept_as_a_digest_of_its_ciphertext() -> None:
    ciphertext = "v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    plan = build_stack_plan(record(_program), secure_config={"proj:databaseUri": ciphertext})

    digest = plan["secretConfig"]["proj:databaseUri"]
    assert digest.startswith("sha256:") and ciphertext not in dump_stack_plan(plan)
    again = build_stack_plan(record(_program), secure_config={"proj:databaseUri": ciphertext + "C"})
    assert again["secretConfig"]["proj:databaseUri"] != digest


def test_a_plan_reads_back_as_written() -> None:
    plan = _plan()

    assert parse_stack_plan(dump_stack_plan(plan)) == plan


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("{", "not a plan (invalid JSON", id="not-json"),
    pytest.param("[]", "not a plan (no `format` field)", id="not-an-object"),
    pytest.param('{"resources": {}}', "not a plan (no `format` field)", id="no-format"),
    pytest.param('{"format": "mlops-plan/v9", "stack": "x", "resources": {}}',
                 "plan format 'mlops-plan/v9' is not supported", id="future-format"),
    pytest.param(f'{{"format": "{STACK_PLAN_FORMAT}", "stack": "x", "resources": []}}',
                 "`resources` must be a mapping", id="resources-list"),
    pytest.param(f'{{"format": "{STACK_PLAN_FORMAT}", "stack": "x", "resources": {{"k": {{}}}}}}',
                 "resource 'k' needs", id="resource-without-fields"),
])
def test_a_file_that_is_not_a_readable_plan_is_rejected_with_the_reason(
    text: str, message: str
) -> None:
    with pytest.raises(PlanFormatError, match=r"^old\.json: ") as raised:
        parse_stack_plan(text, "old.json")

    assert message in str(raised.value)


# --- diffs of values -------------------------------------------------------------------------


def test_a_changed_scalar_is_reported_at_its_path() -> None:
    old = {"spec": {"replicas": 2, "template": {"metadata": {"labels": {"model-version": "7"}}}}}
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 3
    new["spec"]["template"]["metadata"]["labels"]["model-version"] = "8"

    changes = diff_values(old, new)

    assert [(c.path_text, c.old, c.new) for c in changes] == [
        ("spec.replicas", 2, 3),
        ("spec.template.metadata.labels.model-version", "7", "8"),
    ]


def test_named_list_items_are_matched_by_name_whatever_their_position() -> None:
    old = {"env": [{"name": "A", "value": "1"}, {"name": "URI", "value": "models:/f/7"}]}
    new = {"env": [{"name": "NEW", "value": "x"}, {"name": "A", "value": "1"},
                   {"name": "URI", "value": "models:/f/8"}]}

    changes = diff_values(old, new)

    assert [(c.kind, c.path_text) for c in changes] == [
        ("changed", "env[name=URI].value"), ("added", "env[name=NEW]")]
    assert changes[1].position == 0
    assert apply_changes(old, changes) == new


def test_an_argument_inserted_into_a_command_is_one_change() -> None:
    old = {"args": ["serve", "--port", "8080"]}
    new = {"args": ["serve", "--workers", "2", "--port", "8080"]}

    changes = diff_values(old, new)

    assert [(c.kind, c.path_text, c.new) for c in changes] == [
        ("added", "args[1]", "--workers"), ("added", "args[2]", "2")]
    assert apply_changes(old, changes) == new


def test_true_and_one_are_different_values() -> None:
    assert diff_values({"a": True}, {"a": 1}) == (FieldChange(("a",), True, 1),)


def test_paths_quote_keys_that_are_not_plain_names() -> None:
    path = ("metadata", "labels", "app.kubernetes.io/name")
    assert path_text(path) == 'metadata.labels["app.kubernetes.io/name"]'
    assert path_text(("containers", Named("a b"), "args", 2)) == 'containers[name="a b"].args[2]'
    assert path_text(()) == "(root)"


# --- model versions --------------------------------------------------------------------------


SERVICE_KEY = "mlops:index:ModelService::fraud"


def _plan_of(resources: dict[str, dict[str, Any]], stack: str = "prod",
             models: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plan of Deployments named by ``resources``; ``models`` as components declare them."""
    return {
        "format": STACK_PLAN_FORMAT, "project": "mlops", "stack": stack,
        "resources": {
            f"kubernetes:apps/v1:Deployment::{name}": {
                "type": "kubernetes:apps/v1:Deployment", "name": name, "parent": None,
                "custom": True, "inputs": inputs,
            } for name, inputs in resources.items()
        } | ({SERVICE_KEY: {"type": "mlops:index:ModelService", "name": "fraud",
                            "parent": None, "custom": False, "inputs": {}}}
             if models else {}),
        "outputs": {}, "secretConfig": {}, "models": models or {},
    }


def _declared(**roles: str | None) -> dict[str, Any]:
    """The service's declared models: role=version ("@alias" for an unresolved alias)."""
    return {SERVICE_KEY: {
        role: {"model": "fraud", "version": None, "alias": version[1:]}
        if version and version.startswith("@") else
        {"model": "fraud", "version": version, "alias": "champion"}
        for role, version in roles.items()}}


def _service(version: str, replicas: int = 2) -> dict[str, Any]:
    return {"spec": {"replicas": replicas, "template": {
        "metadata": {"labels": {"mlops.dev/model-version": version}},
        "spec": {"containers": [{
            "name": "server",
            "args": ["serve", "--model-uri", f"models:/fraud/{version}"],
            "env": [{"name": "MLOPS_MODEL_URI", "value": f"models:/fraud/{version}"}],
        }]},
    }}}


def test_a_model_version_bump_is_summarised_once_per_component_role() -> None:
    diff = diff_stack_plans(_plan_of({"fraud": _service("7")}, models=_declared(stable="7")),
                      _plan_of({"fraud": _service("8")}, models=_declared(stable="8")))

    [move] = diff.model_versions
    assert (move.key, move.role, move.model, move.old, move.new) == (
        SERVICE_KEY, "stable", "fraud", "7", "8")
    assert (move.type, move.name) == ("mlops:index:ModelService", "fraud")
    assert len(diff.changed[0].fields) == 3


def test_new_and_removed_roles_show_their_model_versions() -> None:
    diff = diff_stack_plans(_plan_of({}, models=_declared(stable="7", canary="8")),
                      _plan_of({}, models=_declared(stable="8")))

    assert [(v.role, v.old, v.new) for v in diff.model_versions] == [
        ("canary", "8", None), ("stable", "7", "8")]


def test_another_model_in_the_same_role_leaves_and_comes() -> None:
    old = _declared(stable="7")
    new = {SERVICE_KEY: {"stable": {"model": "churn", "version": "3", "alias": None}}}

    diff = diff_stack_plans(_plan_of({}, models=old), _plan_of({}, models=new))

    assert [(v.model, v.old, v.new) for v in diff.model_versions] == [
        ("fraud", "7", None), ("churn", None, "3")]


def test_version_like_fields_of_resources_are_no_model_versions() -> None:
    """Only what components declare counts: a label or env var named like a version is a
    field change like any other."""
    old = {"metadata": {"labels": {"mlops.dev/model-version": "3"}},
           "env": [{"name": "MODEL_VERSION", "value": "3"}], "uri": "models:/x/3"}
    new = {"metadata": {"labels": {"mlops.dev/model-version": "4"}},
           "env": [{"name": "MODEL_VERSION", "value": "4"}], "uri": "models:/x/4"}

    diff = diff_stack_plans(_plan_of({"svc": old}), _plan_of({"svc": new}))

    assert diff.model_versions == ()
    assert len(diff.changed[0].fields) == 3


def test_a_plan_without_declared_models_says_versions_are_not_compared() -> None:
    old = _plan_of({"fraud": _service("7")})
    del old["models"]  # as an earlier mlops wrote it

    diff = diff_stack_plans(parse_stack_plan(json.dumps(old)),
                      _plan_of({"fraud": _service("8")}, models=_declared(stable="8")))

    assert diff.model_versions == ()
    assert any("model versions are not compared" in n for n in diff.notes)


def test_declared_models_must_be_well_formed() -> None:
    plan = _plan_of({}, models={SERVICE_KEY: {"stable": {"version": "7"}}})

    with pytest.raises(PlanFormatError, match="`models` must map"):
        parse_stack_plan(json.dumps(plan))


# --- output ----------------------------------------------------------------------------------


def test_text_puts_model_versions_first_then_each_changed_field() -> None:
    diff = diff_stack_plans(
        _plan_of({"fraud": _service("7")}, "staging", models=_declared(stable="7")),
        _plan_of({"fraud": _service("8", replicas=3)}, "staging", models=_declared(stable="8")))

    text = format_text(diff)

    assert text.splitlines()[:3] == [
        "mlops diff: stack staging",
        "Model versions:",
        "  fraud 7 -> 8 (ModelService fraud, stable)",
    ]
    assert "Resources: 0 to add, 0 to remove, 1 to change (1 unchanged)" in text
    assert "    ~ spec.replicas: 2 -> 3" in text
    assert ('    ~ spec.template.spec.containers[name=server].args[2]: "models:/fraud/7" -> '
            '"models:/fraud/8"') in text


def test_text_of_identical_plans_says_no_changes() -> None:
    plan = _plan_of({"a": _service("1")})

    assert format_text(diff_stack_plans(plan, plan)) == (
        "mlops diff: stack prod\nNo changes (1 resources unchanged).\n")


def test_long_values_are_cut_around_where_they_differ() -> None:
    base = "postgresql://mlflow@registry-postgres.{}.svc.cluster.local:5432/mlflow"
    diff = diff_stack_plans(_plan_of({"a": {"uri": base.format("mlops-staging")}}),
                      _plan_of({"a": {"uri": base.format("mlops")}}))

    [line] = [ln for ln in format_text(diff, width=40).splitlines() if "uri" in ln]

    assert "mlops-staging" in line and "gres.mlops.svc" in line
    assert all(len(v) <= 40 for v in line.split(": ", 1)[1].split(" -> "))


def test_markdown_is_a_pull_request_comment_with_a_section_per_resource() -> None:
    diff = diff_stack_plans(
        _plan_of({"fraud-stable": _service("7"), "old": {"a": 1}}, models=_declared(stable="7")),
        _plan_of({"fraud-stable": _service("8"), "new": {"a": 1}}, models=_declared(stable="8")))

    md = format_markdown(diff)

    assert md.startswith("### mlops diff: `prod`\n\n**Model versions**")
    assert "| <code>fraud</code> | 7 → **8** | ModelService fraud, stable |" in md
    assert "**1 to add, 1 to remove, 1 to change** (1 unchanged)" in md
    assert md.count("<details>") == 3
    assert '- spec.replicas' not in md
    assert '+ spec.template.metadata.labels["mlops.dev/model-version"]: "8"' in md


def test_markdown_fences_survive_backticks_in_values() -> None:
    diff = diff_stack_plans(_plan_of({"a": {"cmd": "echo ```"}}), _plan_of({"a": {"cmd": "x"}}))

    md = format_markdown(diff)

    assert "````diff\n" in md and "\n````" in md


def test_markdown_stays_under_the_comment_limit() -> None:
    old = _plan_of({f"svc-{i}": {"blob": "a" * 70} for i in range(400)})
    new = _plan_of({f"svc-{i}": {"blob": "b" * 70} for i in range(400)})

    md = format_markdown(diff_stack_plans(old, new), limit=20_000)

    assert len(md) < 20_000
    assert "Too long for one comment" in md


def test_json_lists_every_change_with_structured_paths() -> None:
    diff = diff_stack_plans(_plan_of({"fraud-stable": _service("7")}, models=_declared(stable="7")),
                      _plan_of({"fraud-stable": _service("8")}, models=_declared(stable="8")))

    doc = json.loads(json.dumps(diff_json(diff)))

    assert doc["hasChanges"] is True
    assert doc["modelVersions"] == [{
        "key": SERVICE_KEY, "type": "mlops:index:ModelService", "name": "fraud",
        "role": "stable", "model": "fraud", "old": "7", "new": "8"}]
    env = next(f for f in doc["changed"][0]["fields"] if "env" in f["path"])
    assert env["segments"] == ["spec", "template", "spec", "containers", {"name": "server"},
                               "env", {"name": "MLOPS_MODEL_URI"}, "value"]
    assert (env["old"], env["new"]) == ("models:/fraud/7", "models:/fraud/8")


def test_encrypted_config_set_again_is_a_change_without_its_value() -> None:
    old, new = _plan_of({}), _plan_of({})
    old["secretConfig"] = {"mlops:databaseUri": "sha256:aaaa"}
    new["secretConfig"] = {"mlops:databaseUri": "sha256:bbbb"}

    diff = diff_stack_plans(old, new)

    assert diff.has_changes
    assert "mlops:databaseUri: set again" in format_text(diff)
    assert "sha256" not in format_text(diff) + format_markdown(diff)


# --- properties ------------------------------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.5, 2.0])
            | st.sampled_from(["", "a", "b", "[secret]", "models:/m/1", "models:/m/2",
                               "models:/m@champion"]))
_keys = st.sampled_from(["name", "value", "spec", "args", "model-version", "a.b/c", "x y"])
_named_items = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c", "d"])},
                          optional={"value": _scalars, "spec": _scalars}),
    max_size=4, unique_by=lambda item: item["name"])
_values = st.recursive(
    _scalars,
    lambda children: (st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4)
                      | _named_items),
    max_leaves=16,
)
_inputs = st.dictionaries(_keys, _values, max_size=4)
_resource_names = st.sampled_from(["p", "q", "r", "s"])


@st.composite
def _plans(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(_resource_names, max_size=4))
    plan = _plan_of({name: draw(_inputs) for name in names})
    keys = sorted(plan["resources"])
    for entry in plan["resources"].values():
        entry["parent"] = draw(st.none() | st.sampled_from(keys))
    plan["outputs"] = draw(_inputs)
    plan["secretConfig"] = draw(st.dictionaries(st.sampled_from(["k1", "k2"]),
                                                st.sampled_from(["sha256:1", "sha256:2"])))
    plan["models"] = draw(_models)
    return plan


_model_refs = st.sampled_from(["fraud", "churn"]).flatmap(lambda model: st.one_of(
    st.sampled_from(["1", "2"]).map(lambda v: {"model": model, "version": v, "alias": None}),
    st.just({"model": model, "version": None, "alias": "champion"})))
_models = st.dictionaries(
    st.sampled_from([SERVICE_KEY, "mlops:index:ModelService::other"]),
    st.dictionaries(st.sampled_from(["stable", "canary"]), _model_refs, min_size=1))


@st.composite
def _plan_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two plans, the second often an edit of the first (so that most resources match)."""
    old = draw(_plans())
    if draw(st.booleans()):
        return old, draw(_plans())
    new = copy.deepcopy(old)
    for key in sorted(old["resources"]):
        action = draw(st.sampled_from(["keep", "edit", "drop"]))
        if action == "drop":
            del new["resources"][key]
        elif action == "edit":
            entry = new["resources"][key]
            entry["inputs"] = draw(st.sampled_from([
                _mutate(draw, entry["inputs"]), draw(_inputs)]))
    if draw(st.booleans()):
        new["models"] = draw(_models)
    return old, new


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    """The value with one leaf changed, or one key or list item added or dropped, somewhere."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(draw, value[key])}
    if isinstance(value, dict):
        return {**value, draw(_keys): draw(_values)}
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        edit = draw(st.sampled_from(["change", "drop", "insert"]))
        if edit == "drop":
            return [*value[:i], *value[i + 1:]]
        if edit == "insert":
            names = [item.get("name") if isinstance(item, dict) else None for item in value]
            free = sorted({"a", "b", "c", "d", "e"} - {n for n in names if isinstance(n, str)})
            named = all(isinstance(n, str) for n in names)
            item = {"name": free[0], "value": draw(_scalars)} if named and free else draw(_values)
            return [*value[:i], item, *value[i:]]
        return [*value[:i], _mutate(draw, value[i]), *value[i + 1:]]
    return draw(_values)


@st.composite
def _value_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    """Two values: unrelated, or the second a few edits away from the first."""
    old = draw(_values)
    if draw(st.booleans()):
        return old, draw(_values)
    new = old
    for _ in range(draw(st.integers(1, 3))):
        new = _mutate(draw, new)
    return old, new


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(plan=_plans())
def test_a_plan_compared_with_itself_has_no_changes(plan: dict[str, Any]) -> None:
    diff = diff_stack_plans(plan, copy.deepcopy(plan))

    assert diff == StackPlanDiff(old_stack="prod", new_stack="prod",
                            unchanged=len(plan["resources"]))
    assert not diff.has_changes


@settings(max_examples=300, deadline=None)
@given(pair=_plan_pairs())
def test_what_one_direction_adds_the_other_removes(
    pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    old, new = pair

    forward, backward = diff_stack_plans(old, new), diff_stack_plans(new, old)

    assert [r.key for r in forward.added] == [r.key for r in backward.removed]
    assert [r.key for r in forward.removed] == [r.key for r in backward.added]
    assert [c.key for c in forward.changed] == [c.key for c in backward.changed]
    assert forward.has_changes == backward.has_changes
    assert {(v.key, v.role, v.model, v.old, v.new) for v in forward.model_versions} == {
        (v.key, v.role, v.model, v.new, v.old) for v in backward.model_versions}
    assert bool(forward.model_versions) == (old["models"] != new["models"])


@settings(max_examples=300, deadline=None)
@given(pair=_plan_pairs())
def test_applying_the_reported_changes_to_the_old_plan_gives_the_new_one(
    pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    old, new = pair

    diff = diff_stack_plans(old, new)

    rebuilt = {k: v for k, v in copy.deepcopy(old["resources"]).items()
               if k not in {r.key for r in diff.removed}}
    rebuilt.update({r.key: copy.deepcopy(new["resources"][r.key]) for r in diff.added})
    for change in diff.changed:
        entry = rebuilt[change.key]
        entry["inputs"] = apply_changes(entry["inputs"], change.fields)
        if change.parent:
            assert change.parent[0] == entry["parent"]
            entry["parent"] = change.parent[1]
    assert _canonical(rebuilt) == _canonical(new["resources"])
    assert _canonical(apply_changes(old["outputs"], diff.outputs)) == _canonical(new["outputs"])
    assert (_canonical(apply_changes(old["secretConfig"], diff.secret_config))
            == _canonical(new["secretConfig"]))


@settings(max_examples=500, deadline=None)
@given(pair=_value_pairs())
def test_applying_a_value_diff_rebuilds_the_new_value(pair: tuple[Any, Any]) -> None:
    old, new = pair

    changes = diff_values(old, new)

    assert _canonical(apply_changes(old, changes)) == _canonical(new)
    assert all((c.old is ABSENT) + (c.new is ABSENT) < 2 for c in changes)
    assert not diff_values(new, copy.deepcopy(new))


@settings(max_examples=150, deadline=None)
@given(pair=_plan_pairs())
def test_every_format_names_every_changed_resource(
    pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    diff = diff_stack_plans(*pair)

    text, md = format_text(diff), format_markdown(diff)
    doc = json.loads(json.dumps(diff_json(diff)))

    for resource in (*diff.added, *diff.removed, *diff.changed):
        assert resource.key in text
        assert f"<code>{resource.name}</code>" in md
    assert doc["summary"]["change"] == len(diff.changed)


@settings(max_examples=300, deadline=None)
@given(old=_named_items, new=_named_items)
def test_named_lists_rebuild_whatever_was_added_removed_or_reordered(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    changes = diff_values({"env": old}, {"env": new})

    assert _canonical(apply_changes({"env": old}, changes)) == _canonical({"env": new})


# --- warnings and notes ------------------------------------------------------------------------


def test_an_alias_becoming_unresolved_lists_only_the_model() -> None:
    """The finding: a bogus ``mlops.dev/model-version none → unresolved`` row."""
    diff = diff_stack_plans(_plan_of({}, models=_declared(stable="7")),
                      _plan_of({}, models=_declared(stable="@champion")))

    assert [(v.model, v.old, v.new) for v in diff.model_versions] == [
        ("fraud", "7", "@champion")]


def _warned_program() -> None:
    pulumi.log.warn("canary weight 10% becomes 25% without a Gateway")
    pulumi.log.info("'models:/fraud@champion' resolved to version 7 at registry http://r:5000")
    pulumi.CustomResource(THING, "plain", {"n": 1})


def test_warnings_and_notes_of_the_program_are_in_the_plan_and_every_diff_format() -> None:
    plan = parse_stack_plan(dump_stack_plan(build_stack_plan(record(_warned_program))))
    assert plan["warnings"] == ["canary weight 10% becomes 25% without a Gateway"]
    assert plan["notes"] == [
        "'models:/fraud@champion' resolved to version 7 at registry http://r:5000"]
    diff = diff_stack_plans(plan, plan)  # no changes: the warnings are still shown
    assert "! canary weight 10% becomes 25%" in format_text(diff)
    markdown = format_markdown(diff)
    assert "**Warnings**" in markdown and "canary weight 10% becomes 25%" in markdown
    assert "resolved to version 7 at registry http://r:5000" in markdown
    assert diff_json(diff)["warnings"] == plan["warnings"]


def test_a_plan_of_an_earlier_version_without_warnings_reads_with_none() -> None:
    doc = _plan_of({"fraud": _service("7")})
    assert "warnings" not in doc
    assert parse_stack_plan(json.dumps(doc))["warnings"] == []
    with pytest.raises(PlanFormatError, match="`warnings` must be a list of strings"):
        parse_stack_plan(json.dumps({**doc, "warnings": "oops"}))


def test_a_change_to_a_pod_template_or_a_container_warns_that_it_restarts() -> None:
    scaled = diff_stack_plans(_plan_of({"fraud": _service("7", replicas=2)}),
                        _plan_of({"fraud": _service("7", replicas=3)}))
    assert scaled.warnings == ()  # more replicas: running pods stay
    bumped = diff_stack_plans(_plan_of({"fraud": _service("7")}),
                              _plan_of({"fraud": _service("8")}))
    assert bumped.warnings == (
        "Deployment `fraud` restarts its pods (its pod template changes: 3 fields)",)

    def container(image: str) -> dict[str, Any]:
        plan = _plan_of({})
        plan["resources"]["docker:index/container:Container::fraud"] = {
            "type": "docker:index/container:Container", "name": "fraud", "parent": None,
            "custom": True, "inputs": {"image": image}}
        return plan

    assert diff_stack_plans(container("a:1"), container("a:2")).warnings == (
        "Container `fraud` is replaced (its inputs change)",)
