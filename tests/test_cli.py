"""End-to-end CLI: the real interactive chat in a pseudo-terminal, pipe and --json modes, info, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
CLI = str(Path(sys.executable).with_name("clova-edge"))


def run(*args, stdin="", env=None):
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_pipe_prints_only_the_answer(smollm2_model_dir):
    out = run("chat", str(smollm2_model_dir), "--max-new-tokens", "24", stdin="What is 2+2?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and ">>>" not in out.stdout and "clova-edge" not in out.stdout


def test_json_mode(smollm2_model_dir):
    out = run("generate", "Name a colour.", "-m", str(smollm2_model_dir), "--json", "--max-new-tokens", "16")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["text"] and obj["finish_reason"] in ("stop", "length") and obj["generated_tokens"] >= 1
    assert {"tokens", "ttft_s", "prefill_tps", "decode_tps", "prompt_tokens"} <= set(obj)


def test_model_dir_from_environment_and_info(smollm2_model_dir):
    out = run("info", env={"CLOVA_EDGE_MODEL": str(smollm2_model_dir)})
    assert out.returncode == 0, out.stderr
    assert "fp32" in out.stdout and "context" in out.stdout


def test_missing_model_folder_is_one_clear_line(tmp_path):
    out = run("chat", str(tmp_path / "nope"), stdin="hi\n")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "error:" in out.stderr and "export" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_sampling_setting_is_a_flag():
    out = run("chat", "--help")
    for flag in ("--max-new-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty",
                 "--seed", "--stop", "--system", "--variant", "--threads", "--json"):
        assert flag in out.stdout, flag


def test_interactive_chat_in_a_terminal(smollm2_model_dir):
    child = pexpect.spawn(CLI, ["chat", str(smollm2_model_dir), "--max-new-tokens", "300"], encoding="utf-8",
                          timeout=180, dimensions=(40, 120))
    child.expect(">>> ")
    child.sendline("Hi! Who are you?")
    child.expect(">>> ")                                   # turn 1 answered
    child.sendline("/stats")
    child.expect(r"context: (\d+)/\d+ tokens")
    first_context = int(child.match.group(1))
    child.expect(">>> ")
    child.sendline("Tell me more, in one sentence.")       # turn 2 keeps the conversation
    child.expect(">>> ")
    child.sendline("/stats")
    child.expect(r"context: (\d+)/\d+ tokens")
    assert int(child.match.group(1)) > first_context
    child.expect(">>> ")
    child.sendline("/reset")
    child.expect(r"\(conversation cleared\)")
    child.expect(">>> ")
    child.sendline("Write a very long essay about the history of the sea, with many details.")
    child.expect(r"many details\.\r\n")                    # the terminal's echo of the line (not the answer)
    child.expect(r"\S{4}")                                 # the answer is streaming
    child.sendintr()                                       # Ctrl-C stops it and returns to the prompt
    child.expect(r"\(stopped\)")
    child.expect(">>> ")
    child.sendline("/help")
    child.expect("/reset")
    child.expect(">>> ")
    child.sendeof()                                        # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_hyperclovax_default_system_prompt_has_todays_date(tiny_model_dir):
    import datetime as dt
    from clova_edge import Engine
    from clova_edge.repl import default_system
    engine = Engine.load(tiny_model_dir)
    text = default_system(engine, dt.date(2025, 4, 24))
    assert text == '- AI 언어모델의 이름은 "CLOVA X" 이며 네이버에서 만들었다.\n- 오늘은 2025년 04월 24일(목)이다.'
