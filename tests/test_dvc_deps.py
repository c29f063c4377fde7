"""dvc.yaml's code deps are what each stage runs: every asrtune module a stage can import (transitively,
function-level imports included: the import graph is read from the source with `ast`, nothing is imported)
is among its deps, and no src/ dep is one the stage never imports. Otherwise editing a module leaves
`dvc status` clean while the outputs it made are stale (or reruns a stage for code it never runs).
Also: a stage that reads models/base declares it, production code never imports the test fixtures' module
(asrtune.testing), and finetune's resume fingerprint hashes the code its training runs."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]  # this test's own checkout: its src/ and dvc.yaml
SRC = REPO / "src"
PKG = SRC / "asrtune"

# Every package's __init__.py is a docstring and nothing else (checked below): importing a package runs no code.
DOCSTRING_ONLY = tuple(sorted(f.relative_to(REPO).as_posix() for f in PKG.rglob("__init__.py")))
# Modules no stage needs to declare (or may): none of them can change an output, for the reason given.
EXEMPT = {
    **{init: "a package's docstring, no code" for init in DOCSTRING_ONLY},
    "src/asrtune/errors.py": "the UserError class: a failure's message, never an output",
    "src/asrtune/params.py": "the params schema: DVC tracks the values, which params.yaml carries (stages' `params`)",
    "src/asrtune/paths.py": "path constants: where a stage reads and writes, which dvc.yaml names itself",
    "src/asrtune/cli.py": "the command line: maps each command to its stage module's run()",
}


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def short(path: str) -> str:
    """src/asrtune/evaluation/scoring.py -> evaluation/scoring.py: how a chain of imports is printed."""
    return path.removeprefix("src/asrtune/")


def module_file(dotted: str) -> Path | None:
    """asrtune.x.y -> src/asrtune/x/y.py or src/asrtune/x/y/__init__.py; None for what is not a module of ours."""
    parts = dotted.split(".")
    if parts[0] != "asrtune":
        return None
    base = SRC.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def with_parents(dotted: str) -> list[str]:
    """Importing asrtune.a.b runs asrtune/__init__.py and asrtune/a/__init__.py before asrtune/a/b."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def dotted_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Path]:
    """Every asrtune module that `path` imports anywhere (top level, in functions, under conditions), in
    source order: `import asrtune.x`, `from asrtune import x` (x: a module or package, else a name of
    asrtune/__init__), `from asrtune.x import y` (y: a submodule, or a name of asrtune.x), relative imports,
    and the parent packages each of them runs first."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = dotted_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names += with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .y import z
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += with_parents(module)
            for alias in node.names:
                if module_file(f"{module}.{alias.name}"):
                    names.append(f"{module}.{alias.name}")
    found: list[Path] = []
    for name in names:
        f = module_file(name)
        if f and f != path and f not in found:
            found.append(f)
    return found


def closure(start: Path, skip=lambda importer, imported: False) -> dict[str, list[str]]:
    """Every module reachable from `start` -> the shortest chain of imports reaching it (breadth first).
    `skip(importer, imported)` drops an edge (both as repo-relative paths)."""
    chains = {rel(start): [rel(start)]}
    queue = deque([start])
    while queue:
        f = queue.popleft()
        for g in imports_of(f):
            if rel(g) not in chains and not skip(rel(f), rel(g)):
                chains[rel(g)] = chains[rel(f)] + [rel(g)]
                queue.append(g)
    return chains


def stage_modules() -> dict[str, Path]:
    """cli.py's commands -> the module of the function each runs (`app.command("score")(score.run)`)."""
    tree = ast.parse((PKG / "cli.py").read_text(encoding="utf-8"))
    bound = {}  # a name in cli.py -> the asrtune module it is
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
    commands = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call) and isinstance(node.func.func, ast.Attribute)
                and node.func.func.attr == "command" and node.func.args and isinstance(node.func.args[0], ast.Constant)
                and node.args and isinstance(node.args[0], ast.Attribute) and isinstance(node.args[0].value, ast.Name)):
            module = module_file(bound.get(node.args[0].value.id, ""))
            assert module, f"cli.py: command {node.func.args[0].value!r} runs {ast.unparse(node.args[0])}, not a module of asrtune"
            commands[node.func.args[0].value] = module
    return commands


def dvc_stages() -> dict[str, tuple[Path, list[str]]]:
    """dvc.yaml's stages -> (the stage module its `asrtune <command>` runs, its deps as written)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    commands = stage_modules()
    stages = {}
    for name, stage in spec.items():
        body = stage.get("do", stage)  # foreach stages keep cmd and deps under `do`
        words = body["cmd"].split()
        assert words[0] == "asrtune" and words[1] in commands, f"{name}: cmd {body['cmd']!r} is no asrtune command"
        stages[name] = (commands[words[1]], [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])])
    return stages


STAGES = dvc_stages()


def covered(module: str, deps: list[str]) -> bool:
    return any(module == d or module.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_code_deps_are_exactly_what_it_imports(stage):
    start, deps = STAGES[stage]
    chains = closure(start)
    needed = {m for m in chains if m not in EXEMPT}
    code_deps = [d for d in deps if d.startswith("src/")]
    problems = [f"{stage}: {m} not in deps ({' -> '.join(short(c) for c in chains[m])})"
                for m in sorted(needed) if not covered(m, code_deps)]
    for d in code_deps:
        path = REPO / d
        if not path.exists():
            problems.append(f"{stage}: dep {d} does not exist")
            continue
        # a folder dep: every module in it (its packages' docstring-only __init__.py aside) must be one the stage imports
        files = sorted(rel(f) for f in path.rglob("*.py") if rel(f) not in DOCSTRING_ONLY) if path.is_dir() else [d]
        unused = [f for f in files if f not in chains]
        exempt = [f for f in files if f in chains and f in EXEMPT]
        where = "" if files == [d] else f" covers {', '.join(unused + exempt)}:"
        if unused:
            problems.append(f"{stage}: dep {d}{where} stale, {stage} never imports {'it' if files == [d] else 'them'}")
        elif exempt:
            problems.append(f"{stage}: dep {d}{where} exempt, cannot change an output ({EXEMPT[exempt[0]]}): leave it out")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_that_reads_the_base_model_declares_it(stage):
    """paths.BASE_MODEL, or chain.root_of (a fine-tuned chain's root: models/base, whose processor,
    generation config and carried files merge copies), in a stage module: models/base (or a file of it)
    is a dep, or the stage's own model is (decode's models/${item.model}, the root of itself)."""
    start, deps = STAGES[stage]
    if stage == "base":
        pytest.skip("base writes models/base")
    names = {n.attr if isinstance(n, ast.Attribute) else n.id
             for n in ast.walk(ast.parse(start.read_text(encoding="utf-8"))) if isinstance(n, (ast.Attribute, ast.Name))}
    if names & {"BASE_MODEL", "root_of"}:
        assert any(d == "models/base" or d.startswith(("models/base/", "models/${")) for d in deps), \
            f"{stage}: reads models/base ({', '.join(sorted(names & {'BASE_MODEL', 'root_of'}))}) but does not declare it"


def test_every_cli_stage_command_is_a_dvc_stage():
    """A stage module with no dvc.yaml stage would escape the check above."""
    run_by_dvc = {m for m, _ in STAGES.values()}
    stage_dir = PKG / "stages"
    missing = [rel(m) for m in stage_modules().values() if m.parent == stage_dir and m not in run_by_dvc]
    assert not missing, f"stage modules no dvc.yaml stage runs: {missing}"


def test_exempt_modules_exist_and_packages_stay_docstring_only():
    for name in EXEMPT:
        assert (REPO / name).is_file(), f"EXEMPT lists {name}, which is gone: drop it"
    for name in DOCSTRING_ONLY:
        body = ast.parse((REPO / name).read_text(encoding="utf-8")).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        assert not code, f"{name} has code now ({ast.unparse(code[0])[:80]}): it can change outputs; declare it and drop it from EXEMPT"


def test_production_never_imports_the_test_fixtures():
    """asrtune.testing builds the test suite's random models; no module under src/asrtune may import it (its
    chat template once decided every real Fun-ASR conversion, invisible to DVC)."""
    tiny = PKG / "testing.py"
    users = [rel(f) for f in sorted(PKG.rglob("*.py")) if f != tiny and tiny in imports_of(f)]
    assert not users, f"production modules import asrtune.testing: {users}"


def family_closure(family: str) -> dict[str, list[str]]:
    """What finetune runs when models/base is of `family`: its import closure, where registry.get() (in
    families/registry.py) reaches that family's module alone; one family importing another still counts."""
    families = "src/asrtune/families/"

    def other_family(importer: str, imported: str) -> bool:
        return importer == families + "registry.py" and imported.startswith(families) and imported != families + family + ".py"

    return closure(PKG / "stages/finetune.py", skip=other_family)


@pytest.mark.parametrize("family", ["whisper", "audiollm", "aligner"])
def test_finetune_resume_fingerprint_hashes_the_code_it_trains_with(family):
    """A killed run resumes only with the very same code: finetune's fingerprint hashes every module it
    runs for that family (an edit elsewhere, e.g. to another family, keeps resuming)."""
    from asrtune.stages import finetune

    root = Path(finetune.__file__).resolve().parents[1]
    assert root == PKG.resolve(), f"imported asrtune from {root}, not this checkout's {PKG}"
    hashed = {"src/asrtune/" + f.resolve().relative_to(root).as_posix() for f in finetune.code_files(family)}
    chains = family_closure(family)
    needed = {m for m in chains if m not in EXEMPT}
    missing = [f"{m} ({' -> '.join(short(c) for c in chains[m])})" for m in sorted(needed - hashed)]
    extra = sorted(hashed - needed)
    assert not missing and not extra, f"finetune.code_files({family!r}): missing {missing}; never imported {extra}"


def test_importing_asrtune_imports_no_test_fixture():
    import subprocess
    import sys

    code = "import sys, asrtune, asrtune.cli; print(sorted(m for m in sys.modules if m.startswith('asrtune')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "asrtune.testing" not in out, out
