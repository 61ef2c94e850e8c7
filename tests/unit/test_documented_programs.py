"""Every program the docs show plans with `mlops plan`: the examples, the reference stacks,
and the Python examples of the README and docs/ (found in the pages, not copied here).

The finding: `examples/team-stack` (a StackReference without outputs) and the example of
docs/runtime-image.md (an unknown stack output) crashed `mlops plan` with raw tracebacks.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pulumi_mlops.render.harness import load_stack_outputs
from pulumi_mlops.render.stack_plan import dump_stack_plan, parse_stack_plan, plan_stack

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _programs() -> list[tuple[str, str]]:
    """(page#n, source) of each Python example; a block that does not start with an import
    continues the page's previous one (a docs page may build one program over several blocks)."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
        programs: list[str] = []
        for block in blocks:
            if programs and not block.lstrip().startswith(("import", "from")):
                programs[-1] += block
            else:
                programs.append(block)
        found += [(f"{page.name}#{i}", p) for i, p in enumerate(programs)
                  if "pulumi_mlops" in p]
    return found


@pytest.fixture
def program_dir() -> Iterator[Path]:
    # Beside stacks/, as the docs assume (`context=".."` is the repository).
    path = REPO / f".doc-program-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _check(plan: dict[str, object]) -> dict[str, object]:
    plan = parse_stack_plan(dump_stack_plan(plan))
    assert plan["resources"], "the program declared nothing"
    return plan


@pytest.mark.parametrize("where, source", _programs(), ids=[w for w, _ in _programs()])
def test_every_python_example_of_the_docs_plans(where: str, source: str,
                                                program_dir: Path) -> None:
    (program_dir / "__main__.py").write_text(source)
    (program_dir / "Pulumi.yaml").write_text("name: docs\nruntime: python\n")
    config = {f"docs:{key}": ({"secure": "v1:AAAA"} if kind == "require_secret" else "value")
              for kind, key in re.findall(r"(require_secret|require)\(\"([^\"]+)\"\)", source)}
    (program_dir / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": config}))
    _check(plan_stack(program_dir, "dev"))


@pytest.mark.parametrize("cwd, stack", [
    ("examples/quickstart", "dev"), ("examples/team-stack", "dev"),
    (".", "dev"), (".", "staging"), (".", "prod")])
def test_every_example_and_reference_stack_plans(cwd: str, stack: str) -> None:
    _check(plan_stack(REPO / cwd, stack))


def test_a_team_stack_without_the_platform_outputs_says_they_are_unknown() -> None:
    plan = _check(plan_stack(REPO / "examples/team-stack", "dev"))
    warnings = plan["warnings"]
    assert isinstance(warnings, list)
    assert any("StackReference `organization/mlops/dev`" in w and "--stack-outputs" in w
               for w in warnings)


def test_a_team_stack_plans_with_the_platform_outputs_given(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.yaml"
    outputs.write_text(yaml.safe_dump({"organization/mlops/dev": {
        "tracking_uri": "http://registry-mlflow.mlops:5000",
        "team_registry_usernames": {"fraud": "team-fraud"},
        "team_registry_passwords": {"secret": {"fraud": "platform-password-123"}},
        "runtime_image": "registry.example.com/ml-platform/mlops-runtime@sha256:" + "d" * 64,
    }}))
    plan = _check(plan_stack(REPO / "examples/team-stack", "dev",
                               load_stack_outputs(outputs)))
    text = dump_stack_plan(plan)
    assert "StackReference" not in text
    assert "platform-password-123" not in text


def test_stack_outputs_that_are_not_a_mapping_of_stacks_are_refused(tmp_path: Path) -> None:
    from pulumi_mlops.errors import ProgramConfigError

    outputs = tmp_path / "outputs.yaml"
    outputs.write_text("- just a list\n")
    with pytest.raises(ProgramConfigError, match=r"--stack-outputs .*must map each"):
        load_stack_outputs(outputs)
