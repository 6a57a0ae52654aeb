"""Saved sessions: ChatSession.save / Engine.load_session continue a chat with exactly the next tokens of the
uninterrupted one, without re-reading it; a damaged, foreign or mismatched file is one SessionError; the
chat's /save and /load, and `clova-edge chat --load`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clova_edge import Engine
from clova_edge.runtime.errors import ClovaEdgeError, SessionError
from clova_edge.runtime.session_file import MAGIC, open_kv_file, write_kv_file
from clova_edge.runtime.settings import GenerationSettings
from fake_model import script_input

SAMPLED = GenerationSettings(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=3, repetition_penalty=1.2)
CLI = str(Path(sys.executable).with_name("clova-edge"))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Engine.load(tiny_model_dir, variant="fp32", threads=1)


def test_a_loaded_session_continues_exactly(tiny, tmp_path):
    chat = tiny.chat(settings=SAMPLED)
    for text in ("첫 번째 질문이에요.", "Second question, please."):
        list(chat.send(text))
    path = tmp_path / "chat.session"
    chat.save(path)
    loaded = tiny.load_session(path)
    assert loaded.messages == chat.messages and loaded.cache_ids == chat.cache_ids
    assert loaded.tokens_in_context == chat.tokens_in_context and loaded.settings == chat.settings
    n = chat.cache.length
    assert all(np.array_equal(a[:, :, :n], b[:, :, :n])
               for a, b in zip(chat.cache.arrays, loaded.cache.arrays))
    new, old = list(loaded.send("Third?")), list(chat.send("Third?"))
    assert [e.token_id for e in new] == [e.token_id for e in old]
    assert new[-1].n_prompt == old[-1].n_prompt < n // 2    # only the new turn was prefilled
    assert [e.token_id for e in loaded.send("4")] == [e.token_id for e in chat.send("4")]


def test_a_session_paused_for_tools_keeps_its_calls(tiny, tmp_path):
    tools = [{"name": "get_weather", "description": "w", "parameters": {"type": "object"}}]
    chat = tiny.chat(tools=tools, settings=SAMPLED, constrain_tools=False)
    call = {"name": "get_weather", "arguments": {"location": "서울"}}
    chat.messages += [{"role": "user", "content": "서울 날씨?"},
                      {"role": "assistant", "content": "볼게요.", "tool_calls": [call],
                       "tool_call_text": '[{"name": "get_weather", "input": {"location": "서울"}}]',
                       "final": False}]
    chat.save(tmp_path / "t.session")
    back = tiny.load_session(tmp_path / "t.session")
    assert [c.to_dict() for c in back.pending_calls] == [call]
    assert back.tools == chat.tools and not back.constrain_tools and back.messages == chat.messages


def _saved(tiny, tmp_path) -> Path:
    chat = tiny.chat(settings=SAMPLED)
    list(chat.send("hello"))
    path = tmp_path / "s.session"
    chat.save(path)
    return path


def test_damaged_files_are_one_typed_error(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    data = path.read_bytes()
    cases = {"flipped": data[:-3] + bytes([data[-3] ^ 1]) + data[-2:], "truncated": data[:len(data) // 2],
             "empty": b"", "other": b"PK\x03\x04 not ours" * 10, "header": data[:60] + b"#" + data[61:]}
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.session"
        bad.write_bytes(blob)
        with pytest.raises(SessionError) as e:
            tiny.load_session(bad)
        assert str(bad) in str(e.value), name
    with pytest.raises(SessionError, match="cannot read"):
        tiny.load_session(tmp_path / "missing.session")
    assert isinstance(SessionError("x"), ClovaEdgeError)


def _rewrite(path: Path, change) -> Path:
    """The same file with its header changed by `change` (and a valid checksum): a mismatch, not damage."""
    with open_kv_file(path, "session") as (header, arrays):
        header = json.loads(json.dumps(header))
        arrays = [np.array(a) for a in arrays]
    change(header, arrays)
    out = path.with_name("changed.session")
    meta = {k: v for k, v in header.items() if k not in ("format", "version", "kind", "arrays")}
    write_kv_file(out, header.get("kind", "session"), meta, arrays)
    return out


@pytest.mark.parametrize("change, words", [
    (lambda h, a: h["model"].update(variant="int4"), "variant 'int4'"),
    (lambda h, a: h["model"].update(kv_dtype="int8"), "kv_dtype"),
    (lambda h, a: h["model"]["checksums"].update({"model.onnx.data": "0" * 64}), "model.onnx.data differ"),
    (lambda h, a: h.update(length=h["length"] + 1), "layout"),
    (lambda h, a: h.update(length=-1), "positions"),
    (lambda h, a: a.pop(), "layout"),
    (lambda h, a: a.__setitem__(0, a[0].astype(np.float16)), "layout"),
    (lambda h, a: h.update(kind="prompt-cache"), "not a session file"),
])
def test_mismatched_files_are_one_typed_error(tiny, tmp_path, change, words):
    bad = _rewrite(_saved(tiny, tmp_path), change)
    with pytest.raises(SessionError, match=words.replace("(", r"\(")):
        tiny.load_session(bad)


def test_an_unknown_version_is_refused(tiny, tmp_path):
    path = _saved(tiny, tmp_path)
    with open_kv_file(path, "session") as (header, arrays):
        arrays = [np.array(a) for a in arrays]
        meta = {k: v for k, v in header.items() if k not in ("format", "version", "kind", "arrays")}
    import clova_edge.runtime.session_file as sf
    old = sf.VERSION
    sf.VERSION = 99
    try:
        write_kv_file(tmp_path / "v99.session", "session", meta, arrays)
    finally:
        sf.VERSION = old
    with pytest.raises(SessionError, match="version 99"):
        tiny.load_session(tmp_path / "v99.session")
    assert path.read_bytes().startswith(MAGIC)


def test_save_is_atomic_and_reports_unwritable_places(tiny, tmp_path):
    chat = tiny.chat(settings=SAMPLED)
    list(chat.send("hi"))
    path = tmp_path / "a.session"
    chat.save(path)
    chat.save(path)                                        # replaced, no temporary file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["a.session"]
    with pytest.raises(SessionError, match="cannot write"):
        chat.save(tmp_path / "no" / "such" / "dir" / "x.session")


def test_repl_save_and_load(tiny, tmp_path, monkeypatch, capsys):
    from clova_edge import repl
    path = tmp_path / "r.session"
    script_input(monkeypatch, ["hello", f"/save {path}", "/load", f"/load {tmp_path / 'nope'}",
                               f"/load {path}", "/stats", "more"])
    repl.run_repl(tiny, SAMPLED, None)
    out = capsys.readouterr()
    assert "(saved: " in out.out and "(loaded: " in out.out and "user turn(s))" in out.out
    assert "(usage: /load FILE)" in out.out and "context: empty" in out.out
    assert out.err.count("error: ") == 1 and "cannot read" in out.err
    assert path.is_file()


def test_cli_chat_load_continues_and_a_bad_file_is_one_line(tiny, tiny_model_dir, tmp_path):
    chat = tiny.chat(settings=GenerationSettings(max_new_tokens=6))
    list(chat.send("hello"))
    path = tmp_path / "c.session"
    chat.save(path)
    want = "".join(e.text for e in tiny.load_session(path).send("next"))
    out = subprocess.run([CLI, "chat", str(tiny_model_dir), "--variant", "fp32", "--load", str(path)],
                         input="next\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == want + "\n"
    path.write_bytes(path.read_bytes()[:100])
    out = subprocess.run([CLI, "chat", str(tiny_model_dir), "--variant", "fp32", "--load", str(path)],
                         input="next\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1
    assert "damaged" in out.stderr or "not a clova-edge" in out.stderr
