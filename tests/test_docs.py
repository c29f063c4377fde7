"""docs/params.md documents every key of params.yaml's schema (asrtune.params), and nothing else.

The convention docs/params.md follows:

- every key is a table row whose first cell is the key's dotted name in backticks: `train.lora.r`;
- a dict-valued field (`data.corpora`, `mix.stages`, `train.stages`, any other `dict[..., ...]`) takes a
  `<name>` placeholder where its entries' names go: `data.corpora.<name>.role`, `mix.stages.<name>.general`;
- the second cell is the schema's default as YAML in backticks (`16`, `null`, `[0.8, 0.1, 0.1]`), or the
  word "required" where the schema has none; text may follow it (the shipped params.yaml's value, say);
- the last cell names, in backticks, every dvc.yaml stage that declares the key (or a section holding it)
  as a param, or holds no backticks where none does;
- a heading may name a section in backticks (`train.lora`); nothing but keys and sections is named so;
- any other table in the page names things in its first cell without backticks (a corpus name, say).

Only leaf keys need a row (a nested model is a section, its fields the keys).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from asrtune.params import Params

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "params.md"
PLACEHOLDER = "<name>"


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through Optional, unions and Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _dict_value(annotation):
    """The value type of a dict-valued annotation (through Optional and Annotated), else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _dict_value(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [v for arg in typing.get_args(annotation) if (v := _dict_value(arg)) is not None]
        return found[0] if found else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    return None


def walk(model: type[BaseModel], prefix: str = "") -> tuple[dict[str, object], set[str]]:
    """(leaf key -> its schema default, or PydanticUndefined when required; the sections)."""
    leaves: dict[str, object] = {}
    sections: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        value = _dict_value(field.annotation)
        if value is not None:
            sections.add(key)
            inner = _models(value)
            if inner:
                sections.add(f"{key}.{PLACEHOLDER}")
                for m in inner:
                    sub_leaves, sub_sections = walk(m, f"{key}.{PLACEHOLDER}.")
                    leaves.update(sub_leaves)
                    sections |= sub_sections
            else:
                leaves[f"{key}.{PLACEHOLDER}"] = PydanticUndefined
            continue
        inner = _models(field.annotation)
        if inner:
            sections.add(key)
            for m in inner:
                sub_leaves, sub_sections = walk(m, f"{key}.")
                leaves.update(sub_leaves)
                sections |= sub_sections
            continue
        leaves[key] = field.get_default(call_default_factory=True)
    return leaves, sections


LEAVES, SECTIONS = walk(Params)


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (`\\|` inside a cell is not a separator)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def rows() -> dict[str, list[str]]:
    """key -> its row's cells, for every table row whose first cell is one name in backticks."""
    out: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = _cells(line)
        m = re.fullmatch(r"`([^`]+)`", cells[0])
        if m:
            assert m[1] not in out, f"docs/params.md: {m[1]} has two rows"
            out[m[1]] = cells
    return out


def declared_by() -> dict[str, set[str]]:
    """leaf key -> the dvc.yaml stages whose params name it or a section holding it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out: dict[str, set[str]] = {key: set() for key in LEAVES}
    for stage, spec in stages.items():
        body = spec.get("do", spec)
        names = []
        for entry in body.get("params", []):
            if isinstance(entry, str):
                names.append(entry)
            elif isinstance(entry, dict):  # {params file: [keys]}
                names += [k for keys in entry.values() for k in (keys or [])]
        for name in names:
            name = re.sub(r"\$\{[^}]+\}", PLACEHOLDER, name)
            for key in LEAVES:
                if key == name or key.startswith(name + "."):
                    out[key].add(stage)
    return out


def _yaml_default(value):
    """The schema default as YAML loads it (tuples are lists)."""
    return list(value) if isinstance(value, tuple) else value


def test_every_key_has_a_row():
    missing = sorted(set(LEAVES) - set(rows()))
    assert not missing, f"docs/params.md has no row for: {', '.join(missing)}"


def test_every_row_is_a_key():
    unknown = sorted(set(rows()) - set(LEAVES))
    assert not unknown, (f"docs/params.md has rows for what is not a key of asrtune.params: {', '.join(unknown)} "
                         "(sections go in headings; dict entries are written <name>)")


def test_headings_name_only_keys_and_sections():
    named = [name for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("#")
             for name in re.findall(r"`([^`]+)`", line)]
    unknown = sorted(set(named) - SECTIONS - set(LEAVES))
    assert not unknown, f"docs/params.md headings name what is neither a key nor a section: {', '.join(unknown)}"


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_default_is_the_schemas(key):
    cells = rows().get(key)
    if cells is None:
        pytest.skip("no row (test_every_key_has_a_row says so)")
    default = LEAVES[key]
    cell = cells[1]
    if default is PydanticUndefined:
        assert cell.lower().startswith("required"), f"{key}: required in the schema, docs say {cell!r}"
        return
    m = re.match(r"`([^`]*)`", cell)
    assert m, f"{key}: the default cell should start with the default in backticks, got {cell!r}"
    assert yaml.safe_load(m[1]) == _yaml_default(default), f"{key}: the schema's default is {default!r}, docs say {m[1]!r}"


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_stages_are_those_dvc_yaml_declares(key):
    cells = rows().get(key)
    if cells is None:
        pytest.skip("no row (test_every_key_has_a_row says so)")
    documented = set(re.findall(r"`([^`]+)`", cells[-1]))
    assert documented == declared_by()[key], (f"{key}: dvc.yaml declares it for {sorted(declared_by()[key]) or 'no stage'}, "
                                              f"docs/params.md says {sorted(documented) or 'none'}")
