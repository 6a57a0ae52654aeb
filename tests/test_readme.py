"""The README's "Chat and generate" commands and its Python example run as written, from a folder laid out as
after `make demo` (models/smollm2-135m, no models/hyperclovax-0.5b, no $CLOVA_EDGE_MODEL)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def section(name: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]


def readme_commands() -> list[str]:
    """The shell lines of the section's first bash block, comments dropped."""
    block = re.search(r"```bash\n(.*?)```", section("Chat and generate"), re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def demo_like_folder(src: Path, dst: Path) -> Path:
    """A copy of exported test model `src` (files symlinked) with a second variant "int8" that reuses the fp32
    graph, so the README's `--variant int8` runs on the tiny model in seconds. Its quality figures are
    invented,
    only for `info` to show; nothing here measures quality."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name != "manifest.json":
            (dst / p.name).symlink_to(p.resolve())
    raw = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    quality = {"window": 512, "texts": {}, "all": {
        "tokens": 100, "reference_perplexity": 9.0, "perplexity": 9.1,
        "ppl_delta_pct": 1.1, "mean_kl": 0.01, "top1_agreement": 0.9}}
    raw["variants"]["int8"] = {**raw["variants"]["fp32"], "quantization": {
        "scheme": "MatMulNBits", "bits": 8, "block_size": 32, "quality": quality}}
    (dst / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    return dst


@pytest.fixture
def after_make_demo(tiny_model_dir, tmp_path):
    demo_like_folder(Path(tiny_model_dir), tmp_path / "models" / "smollm2-135m")
    (tmp_path / ".venv").symlink_to(VENV)
    env = {k: v for k, v in os.environ.items() if k != "CLOVA_EDGE_MODEL"}
    return tmp_path, env


def test_readme_says_how_to_reach_the_cli():
    text = section("Chat and generate")
    assert ".venv/bin/clova-edge" in text and "source .venv/bin/activate" in text


def test_readme_chat_and_generate_commands_run_as_written(after_make_demo):
    pexpect = pytest.importorskip("pexpect")
    cwd, env = after_make_demo
    commands = [c for c in readme_commands() if c.startswith(("clova-edge", "echo"))]
    assert len(commands) >= 6, commands
    for command in commands:
        shell = f"source .venv/bin/activate && {command}"
        if command.startswith("clova-edge chat") and "|" not in command:   # interactive: needs a terminal
            child = pexpect.spawn("bash", ["-c", shell], cwd=str(cwd), env=env, encoding="utf-8", timeout=120)
            child.expect(">>> ")
            banner = child.before
            child.sendline("/exit")
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 0, (command, child.before)
            assert "models/smollm2-135m" in banner, banner   # the folder the user has, not a cache
            continue
        out = subprocess.run(["bash", "-c", shell], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.strip(), command
        if "--json" in command and "generate" in command:
            assert "finish_reason" in json.loads(out.stdout)


def test_readme_python_example_runs(smollm2_model_dir, tmp_path):
    code = re.search(r"```python\n(.*?)```", section("Python API"), re.S).group(1)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m").symlink_to(Path(smollm2_model_dir).resolve())
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tok/s]" in out.stdout and len(out.stdout.strip().splitlines()) >= 3


def test_readme_serve_section_runs_as_written(after_make_demo):
    """The server command as written, then the curl lines and the openai example against it (port 8000)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    import socket
    import time
    import urllib.request
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 is in use here")
    cwd, env = after_make_demo
    text = section("Serve (an OpenAI-compatible API)")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    serve = blocks[0].split("  #")[0].strip()
    clients = [c.split("  #")[0].rstrip() for c in blocks[1].replace("\\\n", "").splitlines() if c.strip()]
    server = subprocess.Popen(["bash", "-c", f"exec {serve}"], cwd=cwd, env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        for command in clients:
            out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0 and '"object"' in out.stdout and "error" not in out.stdout, \
                (command, out.stdout)
        code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
