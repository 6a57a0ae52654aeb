"""The house rule: runtime/ is the ground floor. It never imports export/, quant/ or benchmarks/, and nothing
below export/ imports torch/transformers/tokenizers; the CLI and public API import without them too."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_RUNTIME = ("torch", "transformers", "tokenizers", "onnx", "clova_edge.export", "clova_edge.quant",
                        "clova_edge.benchmarks", "tiktoken")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level >= 2:
            names.add("..")   # reaching out of runtime/ with a relative import
    return names


def test_runtime_sources_import_nothing_above_them():
    paths = sorted((ROOT / "runtime").glob("*.py"))
    assert paths, f"no runtime sources under {ROOT}"
    for path in paths:
        bad = {n for n in _imports(path) if n == ".." or any(n == f or n.startswith(f + ".")
                                                            for f in FORBIDDEN_IN_RUNTIME)}
        assert not bad, f"{path.name} imports {bad}"


def test_quant_never_imports_torch():
    if not (ROOT / "quant").is_dir():
        pytest.skip("quant/ is not shipped where only the runtime is installed (the arm64 run)")
    for path in sorted((ROOT / "quant").glob("*.py")):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("torch", "transformers")}
        assert not bad, f"{path.name} imports {bad}"


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
    """STYLE.md: every runtime module <= 300 lines, generate.py <= 150, the CLI <= 180 lines per file.
    Read from the imported package, so it also holds for an installed (non-editable) copy, as on the arm64 run."""
    import clova_edge.cli
    import clova_edge.runtime

    runtime = Path(clova_edge.runtime.__file__).parent
    for path in runtime.glob("*.py"):
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 300, f"{path.name}: {n} lines (budget 300)"
    assert len((runtime / "generate.py").read_text().splitlines()) <= 150
    assert len(Path(clova_edge.cli.__file__).read_text().splitlines()) <= 180
