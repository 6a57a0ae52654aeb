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
    (tmp_path / "examples").symlink_to(ROOT / "examples")     # a checkout has them (tools.json, a schema)
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
        if re.search(r"--json(\s|$)", command) and "generate" in command:
            assert "finish_reason" in json.loads(out.stdout)
        if "--json-schema" in command:          # the answer itself is JSON (validated in test_constrain.py)
            json.loads(out.stdout)


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


def _tools_section_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section("Tools and JSON output"), re.S)


def test_readme_json_output_example_runs(smollm2_model_dir, tmp_path):
    pytest.importorskip("llguidance")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m").symlink_to(Path(smollm2_model_dir).resolve())
    out = subprocess.run([sys.executable, "-c", _tools_section_blocks("python")[0]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("{'city': ") and second in ("yes", "no")


def test_readme_tools_commands_run_on_a_hyperclovax_folder(tiny_model_dir, tmp_path):
    """The section's commands as written, on a folder laid out as after `make export` (the tiny
    HyperCLOVAX-shaped test model: random weights, so no call is expected; the CLI path is what is
    checked)."""
    pexpect = pytest.importorskip("pexpect")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "hyperclovax-0.5b").symlink_to(Path(tiny_model_dir).resolve())
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(VENV)
    env = {k: v for k, v in os.environ.items() if k != "CLOVA_EDGE_MODEL"}
    commands = [c.split("  #")[0].strip() for c in _tools_section_blocks("bash")[0].splitlines() if c.strip()]
    assert len(commands) == 2 and all("--tools examples/tools.json" in c for c in commands)
    for command in commands:
        shell = f"source .venv/bin/activate && {command}"
        if "|" not in command:
            child = pexpect.spawn("bash", ["-c", shell], cwd=str(tmp_path), env=env, encoding="utf-8",
                                  timeout=120)
            child.expect(">>> ")
            child.sendline("/exit")
            child.expect(pexpect.EOF)
            child.close()
            assert child.exitstatus == 0, (command, child.before)
            continue
        out = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, (command, out.stderr)


def test_readme_tools_python_example_round_trip(tiny_model_dir, monkeypatch, capsys):
    """The section's tool example as written, on a scripted HyperCLOVAX that calls get_weather and then
    answers (tests/fake_model.py): the call reaches the function, its result reaches the model."""
    from clova_edge.runtime.engine import Engine
    from fake_model import scripted_engine

    call = ('<|im_end|>\n<|im_start|>assistant -> tool/function_call\n'
            '{"name": "get_weather", "input": {"location": "서울"}}<|im_end|><|stop|>')
    engine = scripted_engine(tiny_model_dir,
                             ["확인해 볼게요." + call, "서울은 21도, 맑아요.<|im_end|><|endofturn|>"])
    monkeypatch.setattr(Engine, "load", classmethod(lambda cls, *a, **k: engine))
    monkeypatch.chdir(ROOT)
    exec(_tools_section_blocks("python")[1], {"__name__": "readme"})
    assert capsys.readouterr().out == "확인해 볼게요.서울은 21도, 맑아요.\n"
    result = '{"result": {"location": "서울", "temperature": 21, "unit": "celsius", "sky": "맑음"}}'
    assert result in engine.tokenizer.decode(engine.model.prompts[1])
