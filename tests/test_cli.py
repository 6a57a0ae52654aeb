"""End-to-end CLI: the real interactive chat in a pseudo-terminal, pipe and --json modes, info, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
CLI = str(Path(sys.executable).with_name("clova-edge"))


def run(*args, stdin="", env=None, cwd=None):
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**{k: v for k, v in os.environ.items() if k != "CLOVA_EDGE_MODEL"},
                               **(env or {})})


def one_line_error(out, *words, after_progress=False):
    """Exit 2 and one `error: ...` line on stderr (after the step lines of a long command, if allowed)."""
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 or after_progress and not any(line.startswith("error") for line in lines[:-1])
    for w in words:
        assert w in lines[-1], (w, out.stderr)


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


def test_default_model_is_the_hyperclovax_export_else_the_demo_model(tiny_model_dir, tmp_path):
    one_line_error(run("info", cwd=tmp_path), "make demo", "make export")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m").symlink_to(tiny_model_dir)
    out = run("info", cwd=tmp_path)
    assert out.returncode == 0 and "folder     models/smollm2-135m" in out.stdout, out.stderr
    (tmp_path / "models" / "hyperclovax-0.5b").symlink_to(tiny_model_dir)
    assert "folder     models/hyperclovax-0.5b" in run("info", cwd=tmp_path).stdout
    one_line_error(run("info", cwd=tmp_path, env={"CLOVA_EDGE_MODEL": "elsewhere"}), "elsewhere")


def test_model_folder_positional_or_option_on_every_command(tiny_model_dir):
    m = str(tiny_model_dir)
    for args in (["generate", "Hi", m], ["generate", "Hi", "-m", m], ["chat", m], ["chat", "--model", m]):
        out = run(*args, "--max-new-tokens", "2", stdin="Hi\n")
        assert out.returncode == 0, (args, out.stderr)
    for args in (["info", m], ["info", "-m", m]):
        assert "verified   fp32 vs PyTorch: max |diff|" in run(*args).stdout
    one_line_error(run("info", m, "-m", m + "-other"), "two model folders")


def test_info_shows_quality_and_verification(tiny_model_dir, tmp_path):
    from test_readme import demo_like_folder
    out = run("info", str(demo_like_folder(tiny_model_dir, tmp_path / "m")))
    assert out.returncode == 0, out.stderr
    assert ("quality: perplexity 9.100 (fp32 9.000, +1.1 %), mean KL 0.010 nats, top-1 agreement 90.0 %"
            in out.stdout)
    assert "greedy steps equal" in out.stdout


def test_unknown_variant_names_the_valid_ones(tiny_model_dir):
    for bad in ("int2", "q4"):
        one_line_error(run("chat", str(tiny_model_dir), "--variant", bad, stdin="Hi\n"), "int4, int8, fp32")
    one_line_error(run("chat", str(tiny_model_dir), "--variant", "INT4", stdin="Hi\n"),
                   "quantize", "--bits 4")


def test_head_dim_not_a_multiple_of_16_is_refused_before_tracing(tmp_path):
    src = tmp_path / "hf"
    src.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 320,
              "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 40, "intermediate_size": 640,
              "num_hidden_layers": 1, "vocab_size": 256}
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes(b"")   # never read: the shape is refused first
    one_line_error(run("export", str(src), str(tmp_path / "out")), "head_dim 40", "multiple of 16",
                   after_progress=True)
    assert not (tmp_path / "out").exists()


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


def _default_sigint():
    # a terminal's process gets Ctrl-C by default; a child inherits an ignored SIGINT from its parent (this
    # process, after an earlier test's library set SIG_IGN), which would make Ctrl-C a no-op in the chat
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interactive_chat_in_a_terminal(smollm2_model_dir):
    child = pexpect.spawn(CLI, ["chat", str(smollm2_model_dir), "--max-new-tokens", "2000"], encoding="utf-8",
                          timeout=180, dimensions=(40, 120), preexec_fn=_default_sigint)
    child.expect(">>> ")
    # the folder given, not the export's source
    assert f"clova-edge chat: {smollm2_model_dir} " in child.before
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
    child.sendline("/stats")                               # the old conversation is gone from the stats too
    child.expect(r"context: empty")
    child.expect(">>> ")
    child.sendline("Write a very long essay about the history of the sea, with many details.")
    child.expect(r"many details\.\r\n")                    # the terminal's echo of the line (not the answer)
    child.expect(r"\S{4}")                                 # the answer is streaming
    child.sendintr()                                       # Ctrl-C stops it and returns to the prompt
    child.expect(r"\(stopped\)")
    child.expect(">>> ")
    child.sendline("/stats")
    child.expect(r"generated, .*\(interrupted\)")
    child.expect(">>> ")
    child.sendline("/help")
    child.expect("/reset")
    child.expect(">>> ")
    child.sendeof()                                        # Ctrl-D leaves
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_d_during_an_answer_stops_it_and_leaves(smollm2_model_dir):
    child = pexpect.spawn(CLI, ["chat", str(smollm2_model_dir), "--max-new-tokens", "2000"], encoding="utf-8",
                          timeout=180, dimensions=(40, 120))
    child.expect(">>> ")
    child.sendline("Write a very long essay about the history of the sea, with many details.")
    child.expect(r"many details\.\r\n")
    child.expect(r"\S{4}")                                 # the answer is streaming
    child.sendeof()
    child.expect(r"\(stopped; Ctrl-D: leaving\)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_hyperclovax_default_system_prompt_has_todays_date(tiny_model_dir):
    import datetime as dt
    from clova_edge import Engine
    from clova_edge.repl import default_system
    engine = Engine.load(tiny_model_dir)
    text = default_system(engine, dt.date(2025, 4, 24))
    assert text == ('- AI 언어모델의 이름은 "CLOVA X" 이며 네이버에서 만들었다.\n'
                    '- 오늘은 2025년 04월 24일(목)이다.')
