"""The import rules of docs/architecture.md, read from the source: every `import` and `from ... import`
anywhere in a module (inside functions too, where the heavy imports live), `if TYPE_CHECKING:`
blocks excepted. A unit is a subpackage of mmdit_scale (mmdit_scale.train, ...), or launcher or
data_pipeline."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("mmdit_scale", "launcher", "data_pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in ROOTS:
        return None
    return ".".join(parts[:2]) if parts[0] == "mmdit_scale" and len(parts) > 1 else parts[0]


def imported(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for node in ast.walk(stmt)}
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                found.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


@lru_cache(maxsize=1)
def all_imports() -> dict[str, list[tuple[str, str]]]:
    """module -> [(imported module, 'path:line')] for every module of the three packages."""
    out: dict[str, list[tuple[str, str]]] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            out[module_name(path)] = [(m, f"{path.relative_to(REPO)}:{line}") for m, line in imported(path)]
    return out


def offenders(package: str, allowed) -> list[str]:
    return [f"{where} imports {target}" for module, targets in all_imports().items()
            if module == package or module.startswith(package + ".")
            for target, where in targets if not allowed(target)]


def below(target: str, own: str) -> bool:
    """Not one of our modules outside `own`, and not deepspeed or torch.distributed."""
    if target.split(".")[0] == "deepspeed" or target.startswith("torch.distributed"):
        return False
    return unit(target) is None or target == own or target.startswith(own + ".")


@pytest.mark.parametrize("package", ["mmdit_scale.model", "mmdit_scale.flow"])
def test_model_and_flow_are_single_device_code_that_imports_nothing_of_ours_above_them(package: str) -> None:
    assert offenders(package, lambda target: below(target, package)) == []


def test_data_pipeline_never_imports_the_library() -> None:
    """Stronger than 'never mmdit_scale.train': the pipeline stands alone, and run/ may build on it."""
    assert offenders("data_pipeline", lambda target: unit(target) in (None, "data_pipeline")) == []


def test_only_the_trainer_imports_deepspeed_or_torch_distributed() -> None:
    def allowed(target: str) -> bool:
        return target.split(".")[0] != "deepspeed" and not target.startswith("torch.distributed")

    found = [line for root in ROOTS for line in offenders(root, allowed)]
    assert found and all(line.startswith("mmdit_scale/train/") for line in found), found


def test_there_are_no_cycles_among_the_units() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for module, targets in all_imports().items():
        for target, line in targets:
            src, dst = unit(module), unit(target)
            if src and dst and src != dst:
                edges[src].add(dst)
                where.setdefault((src, dst), line)
    # A unit on a cycle reaches itself; name one import of each edge back to it.
    cycles = []
    for start in sorted(edges):
        seen, stack = set(), list(edges[start])
        while stack:
            node = stack.pop()
            if node == start:
                cycles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
    assert cycles == [], {c: [where[(c, d)] for d in sorted(edges[c])] for c in cycles}


def test_the_rules_see_imports_inside_functions() -> None:
    """The checks above would pass vacuously if function-level imports were missed."""
    targets = {target for target, _ in all_imports()["launcher.commands.train"]}
    assert {"launcher.training", "mmdit_scale.config"} <= targets


def test_importing_every_launcher_module_imports_no_torch() -> None:
    modules = [m for m in all_imports() if unit(m) == "launcher"]
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'deepspeed', 'diffusers'))\n"
            "assert not heavy, heavy[:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_run_directory_package_is_torch_free() -> None:
    code = ("import importlib, pkgutil, sys, mmdit_scale.run as r\n"
            "for m in pkgutil.iter_modules(r.__path__):\n    importlib.import_module('mmdit_scale.run.' + m.name)\n"
            "assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
