"""The layers of the code (docs/architecture.md): a module imports only its own layer and the
layers below it, never one above, so that the core runs without Ray's actors or Tune."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first.  Within a layer modules may import each other, except target <-> rollout.
LAYERS = [
    ("foundation", ["fdpg_ray.errors", "fdpg_ray.paths", "fdpg_ray.atomic", "fdpg_ray.seeding",
                    "fdpg_ray.console", "fdpg_ray.data"]),
    ("objective", ["fdpg_ray.objective"]),
    ("model", ["fdpg_ray.model"]),
    ("config", ["fdpg_ray.config"]),
    ("target", ["fdpg_ray.target"]),
    ("rollout", ["fdpg_ray.rollout"]),
    ("train", ["fdpg_ray.train"]),
    ("actors", ["actors"]),
    ("tuning", ["tuning"]),
    ("cli", ["fdpg_ray.cli"]),
]
SIDE_BY_SIDE = {"target", "rollout"}  # one level: neither may import the other


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def source_files() -> list[tuple[str, Path]]:
    files = []
    for pkg in ("fdpg_ray", "actors", "tuning"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            files.append((".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), f))
    return files


def test_every_module_has_a_layer():
    assert [m for m, _ in source_files() if layer_of(m) is None and m not in ("fdpg_ray", "actors", "tuning")] == []


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for module, path in source_files():
        me = layer_of(module)
        if me is None:
            continue
        for line, name in imports(path):
            other = layer_of(name)
            if other is None:
                continue
            mine, theirs = LAYERS[me][0], LAYERS[other][0]
            if other > me or (mine != theirs and {mine, theirs} <= SIDE_BY_SIDE):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {name} ({theirs})")
    assert bad == []


def test_the_checker_sees_a_violation(tmp_path):
    """The check above can fail: an import of actors/ from the core is reported."""
    f = tmp_path / "x.py"
    f.write_text("def g():\n    from actors.driver import run_distributed\n")
    assert [layer_of(n) for _, n in imports(f)] == [layer_of("actors")]
    assert layer_of("actors") > layer_of("fdpg_ray.train.controller") > layer_of("fdpg_ray.objective.loss")
