"""The house rules, read from the sources with ast (every import, function-level ones included):

- runtime/ is the ground floor: it never imports export/, quant/, benchmarks/, the top-level clova_edge
  modules (the CLI, the public API), torch, transformers, tokenizers, onnx or tiktoken;
- quant/ never imports export/, benchmarks/, torch or transformers;
- export/ never imports benchmarks/; nothing outside benchmarks/ imports benchmarks/;
- no import circles between modules;
- the CLI and the public API import with torch blocked, and the modules keep their line budgets.
The checker is tested on planted violations too, so that it cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"clova_edge.runtime": ROOT / "runtime", "clova_edge.export": ROOT / "export",
           "clova_edge.quant": ROOT / "quant", "clova_edge.benchmarks": ROOT / "benchmarks",
           "clova_edge": ROOT / "clova_edge"}
LAYERS = ("clova_edge.runtime", "clova_edge.export", "clova_edge.quant", "clova_edge.benchmarks")
HEAVY = ("torch", "transformers", "tokenizers", "onnx", "tiktoken")
RULES = {   # importer's package -> what it must never import (a name and everything under it)
    "clova_edge.runtime": ("clova_edge.export", "clova_edge.quant", "clova_edge.benchmarks",
                           "clova_edge.<top>",
                           *HEAVY),
    "clova_edge.quant": ("clova_edge.export", "clova_edge.benchmarks", "torch", "transformers"),
    "clova_edge.export": ("clova_edge.benchmarks",),
    "clova_edge": ("clova_edge.benchmarks",),
}


def modules(folders: dict[str, Path]) -> dict[str, Path]:
    """Module name -> source file for every .py under each folder (packages by their __init__.py)."""
    out = {}
    for package, folder in folders.items():
        skip = [f for f in folders.values() if f != folder and f.is_relative_to(folder)]
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            inside = path.relative_to(folder).parts
            if any(path.is_relative_to(f) for f in skip) or any(p.startswith(".") for p in inside):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports, absolute, anywhere in the file; `from X import y` counts X.y if y is a
    module. importlib.import_module("literal") counts too (export/pipeline.py finds quant/ that way)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            subs = {f"{module}.{a.name}" for a in node.names} & known
            found |= subs or {module}
            if subs and len(subs) < len(node.names):
                found.add(module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


def _under(name: str, prefix: str) -> bool:
    if prefix == "clova_edge.<top>":   # a top-level clova_edge module: the package, the CLI, the API...
        top = name == "clova_edge" or name.startswith("clova_edge.")
        return top and not any(_under(name, p) for p in LAYERS)
    return name == prefix or name.startswith(prefix + ".")


def _package_of(name: str) -> str:
    return next((p for p in LAYERS if _under(name, p)), "clova_edge")


def layering_violations(folders: dict[str, Path]) -> list[str]:
    """Every import that breaks RULES, and every import circle, as readable lines ([] when the house is in
    order)."""
    mods = modules(folders)
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    bad = []
    for name, targets in sorted(graph.items()):
        package = _package_of(name)
        for target in sorted(targets):
            rule = next((p for p in RULES.get(package, ()) if _under(target, p)), None)
            if rule:
                bad.append(f"{mods[name].relative_to(folders[package].parent)}: {name} imports {target}")
    internal = {n: {t for t in ts if t in graph} for n, ts in graph.items()}
    return bad + [" -> ".join(c) for c in cycles(internal)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected group of modules that import each other
    (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                out.append(_closed_path(graph, set(group), v))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _closed_path(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A path start -> ... -> start inside the group (breadth-first, so the shortest)."""
    paths = {w: [start, w] for w in graph[start] if w in group}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def test_runtime_sources_are_found():
    assert modules({"clova_edge.runtime": ROOT / "runtime"}), f"no runtime sources under {ROOT}"


def test_every_folder_keeps_its_rule_and_there_are_no_import_circles():
    if not (ROOT / "quant").is_dir():
        pytest.skip("quant/ is not shipped where only the runtime is installed (the arm64 run)")
    assert layering_violations(FOLDERS) == []


def test_runtime_keeps_its_rule_where_it_is_alone():
    assert layering_violations({"clova_edge.runtime": ROOT / "runtime"}) == []


def _plant(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return {"clova_edge.runtime": root / "runtime", "clova_edge.export": root / "export",
            "clova_edge.quant": root / "quant", "clova_edge.benchmarks": root / "benchmarks",
            "clova_edge": root / "clova_edge"}


def test_checker_finds_planted_rule_breaks(tmp_path):
    folders = _plant(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/a.py": "def f():\n    import torch\n    from clova_edge import cli\n",
        "runtime/b.py": "from ..quant import apply\n",
        "quant/__init__.py": "", "quant/apply.py": "from clova_edge.export.llama import x\n",
        "export/__init__.py": "",
        "export/llama.py": "import importlib\nimportlib.import_module('clova_edge.benchmarks.bench')\n",
        "benchmarks/__init__.py": "", "benchmarks/bench.py": "from clova_edge.runtime import a\n",
        "clova_edge/__init__.py": "", "clova_edge/cli.py": "from clova_edge.runtime import a\n",
    })
    found = "\n".join(layering_violations(folders))
    for line in ("clova_edge.runtime.a imports torch", "clova_edge.runtime.a imports clova_edge.cli",
                 "clova_edge.runtime.b imports clova_edge.quant.apply",
                 "clova_edge.quant.apply imports clova_edge.export.llama",
                 "clova_edge.export.llama imports clova_edge.benchmarks.bench"):
        assert line in found, (line, found)
    assert "benchmarks.bench imports" not in found and "cli imports" not in found   # allowed directions


def test_checker_finds_a_planted_import_circle(tmp_path):
    folders = _plant(tmp_path, {
        "quant/__init__.py": "from .apply import go\n",
        "quant/apply.py": "from .plan import p\n\ndef go():\n    pass\n",
        "quant/plan.py": "def p():\n    from .report import r   # function-level: still a circle\n",
        "quant/report.py": "from clova_edge.quant.apply import go\n",
        "runtime/x.py": "",
    })
    assert layering_violations(folders) == [
        "clova_edge.quant.apply -> clova_edge.quant.plan -> clova_edge.quant.report"
        " -> clova_edge.quant.apply"]


def test_runtime_and_cli_import_with_torch_blocked():
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'tokenizers', 'tiktoken'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        "import clova_edge, clova_edge.cli\n"
        "from clova_edge import Engine, GenerationSettings, ChatSession, Event\n"
        "import clova_edge.runtime.engine, clova_edge.runtime.tokenizer, clova_edge.runtime.chat_template\n"
        "import clova_edge.repl\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_runtime_module_budgets():
    """Size budgets: every runtime module <= 300 lines, generate.py <= 150, the CLI <= 180 lines per file.
    Read from the imported package, so it also holds for an installed (non-editable) copy, as on the arm64
    run."""
    import clova_edge.cli
    import clova_edge.runtime

    runtime = Path(clova_edge.runtime.__file__).parent
    for path in runtime.glob("*.py"):
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 300, f"{path.name}: {n} lines (budget 300)"
    assert len((runtime / "generate.py").read_text().splitlines()) <= 150
    assert len(Path(clova_edge.cli.__file__).read_text().splitlines()) <= 180
