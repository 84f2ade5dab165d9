"""The structure the code promises: registries that agree with what they generate, short functions."""

from __future__ import annotations

import ast
import tomllib

import pytest
from helpers import REPO

from collab_iu.importers import IMPORTERS
from collab_iu.params import IMPORTED_SOURCES, Params
from collab_iu.steps import STEPS, step
from orchestration.defs.project import LOCATION_NAME

MAX_LINES = 60  # a longer function says why in its docstring ("Long because ...")


def _functions(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(REPO), node


@pytest.mark.parametrize("folder", ["collab_iu", "orchestration", "benchmarks"])
def test_functions_are_short_or_say_why(folder):
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, node in _functions(folder)
        if node.end_lineno - node.lineno + 1 > MAX_LINES and "Long because" not in (ast.get_docstring(node) or "")
    ]
    assert not long, long


@pytest.mark.parametrize("entry", STEPS, ids=lambda s: s.name)
def test_every_step_reads_keys_the_schema_has(entry):
    for key in entry.params:
        group, _, name = key.partition(".")
        assert group in Params.model_fields, key
        model = Params.model_fields[group].annotation
        if name and hasattr(model, "model_fields"):
            assert name.split(".")[0] in model.model_fields, key
    for module in entry.code:
        assert (REPO / module).exists(), module


def test_step_names_and_assets_are_unique_and_found_by_either():
    assert len({s.name for s in STEPS}) == len({s.asset for s in STEPS}) == len(STEPS)
    assert all(step(s.name) is step(s.asset) is s for s in STEPS)
    with pytest.raises(KeyError, match="unknown step 'catalog'"):
        step("catalog")


def test_importers_are_the_imported_sources():
    assert set(IMPORTERS) == set(IMPORTED_SOURCES)


def test_the_code_location_is_named_as_dagster_dev_names_it():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["dagster"]["code_location_name"] == LOCATION_NAME
