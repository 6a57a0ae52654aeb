"""HyperCLOVAX's block format on every path: golden prompt strings (tests/data/hcx_blocks_golden.json, written
by hand from the card and the family's documentation), the template's own ids for plain chats, the default /
overridden / removed system prompt, and SmolLM2 left to its own template."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clova_edge import GenerationSettings, PromptError
from clova_edge.runtime.chat_template import ChatTemplate, encode_chat
from clova_edge.runtime.conversation import DEFAULT, ChatFormat
from clova_edge.runtime.engine import Engine
from clova_edge.runtime.errors import ToolCallError
from fake_model import scripted_engine
from tokenizer_files import runtime_tokenizer

GOLDEN = json.loads((Path(__file__).parent / "data" / "hcx_blocks_golden.json").read_text(encoding="utf-8"))
TEMPLATES = json.loads((Path(__file__).parent / "data" / "chat_template_golden.json")
                       .read_text(encoding="utf-8"))
CARD_DAY = dt.date(2025, 4, 24)
ONE = GenerationSettings(max_new_tokens=2)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Engine.load(tiny_model_dir, variant="fp32", threads=1)


def _case_messages(fmt, case):
    system = DEFAULT if case["system"] == "DEFAULT" else case["system"]
    return fmt.opening(system, _tools(case["tools"]), dt.date.fromisoformat(case["today"])) + case["turns"]


def _tools(tools):
    from clova_edge.runtime.tools import normalize_tools
    return normalize_tools(tools)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_blocks_match_the_golden_strings(tiny, case):
    fmt = tiny.format
    assert fmt.hyperclovax
    messages = _case_messages(fmt, case)
    assert fmt.render_text(messages) == case["text"]
    # control tokens exactly where the golden string writes them, the rest plain text
    assert fmt.encode(messages) == tiny.tokenizer.encode(case["text"], allow_special=True)


@pytest.mark.parametrize("name", ["card", "no_system", "tools"])
def test_plain_chats_give_the_models_own_template_ids(tiny, name):
    case = next(c for c in GOLDEN["cases"] if c["name"] == name)
    messages = _case_messages(tiny.format, case)
    assert tiny.format.encode(messages) == encode_chat(tiny.template, tiny.tokenizer, messages)


def test_default_system_has_todays_date(tiny):
    assert "2025년 04월 24일(목)" in tiny.default_system(CARD_DAY)
    d = dt.date.today()
    assert f"{d.year}년 {d.month:02d}월 {d.day:02d}일" in tiny.default_system()


def _prompt(engine):
    return engine.model.prompts[-1]


def test_every_api_path_sends_the_cards_blocks(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["a<|im_end|>"] * 8)
    fmt, user = engine.format, [{"role": "user", "content": "안녕"}]
    card = fmt.encode(fmt.opening(DEFAULT) + user)
    list(engine.stream("안녕", ONE))
    assert _prompt(engine) == card
    engine.generate(user, ONE)                                             # messages without blocks get them
    assert _prompt(engine) == card
    engine.generate([{"role": "system", "content": "S"}, *user], ONE)      # their own system is kept
    assert _prompt(engine) == fmt.encode([{"role": "tool_list", "content": ""},
                                          {"role": "system", "content": "S"}, *user])
    engine.generate("안녕", ONE, system="S")
    assert _prompt(engine) == fmt.encode(fmt.opening("S") + user)
    engine.generate("안녕", ONE, system=None)                               # removed: an empty system block
    assert fmt.render_text(fmt.opening(None) + user).startswith("<|im_start|>tool_list\n<|im_end|>\n"
                                                                "<|im_start|>system\n<|im_end|>\n")
    assert _prompt(engine) == fmt.encode(fmt.opening(None) + user)
    chat = engine.chat(settings=ONE)
    list(chat.send("안녕"))
    assert _prompt(engine) == card
    with pytest.raises(PromptError, match="give it once"):
        engine.generate([{"role": "system", "content": "S"}, *user], ONE, system="T")


def test_chat_history_keeps_the_models_turn_end_and_reuses_the_cache(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["Hi!<|im_end|>", "Bye!<|im_end|>"])
    chat = engine.chat(settings=GenerationSettings(max_new_tokens=8))
    assert "".join(e.text for e in chat.send("hello")) == "Hi!"
    assert "".join(e.text for e in chat.send("bye")) == "Bye!"
    first, second = engine.model.prompts
    # turn 2 prefills only what the cache lacks: the turn end the model stopped at, then the new turn
    assert engine.tokenizer.decode(second) == "<|im_end|><|endofturn|>\n<|im_start|>user\nbye<|im_end|>\n" \
                                              "<|im_start|>assistant\n"
    assert chat.cache.ids == first + engine.tokenizer.encode("Hi!") + second + engine.tokenizer.encode("Bye!")


def test_set_system_and_reset_keep_the_cards_order(tiny):
    chat = tiny.chat(system="A", settings=ONE)
    chat.set_system("B")
    assert [(m["role"], m["content"]) for m in chat.messages] == [("tool_list", ""), ("system", "B")]
    chat.set_system(None)
    assert chat.messages[1] == {"role": "system", "content": ""}
    chat.set_system(DEFAULT)
    assert "CLOVA X" in chat.messages[1]["content"]
    chat.messages.append({"role": "user", "content": "x"})
    chat.reset()
    assert [m["role"] for m in chat.messages] == ["tool_list", "system"]


def test_smollm2_keeps_its_own_template():
    t = TEMPLATES["templates"]["smollm2"]
    fmt = ChatFormat(ChatTemplate(t["source"], t["named_tokens"]), runtime_tokenizer("smollm2"))
    assert not fmt.hyperclovax and fmt.default_system() is None
    assert fmt.opening(DEFAULT) == [] and fmt.opening(None) == []     # the template adds its own default
    assert fmt.opening("Be brief.") == [{"role": "system", "content": "Be brief."}]
    user = [{"role": "user", "content": "Hi"}]
    assert fmt.encode(user) == encode_chat(fmt.template, fmt.tokenizer, user)
    with pytest.raises(ToolCallError, match="no tool protocol"):
        fmt.opening(DEFAULT, [{"name": "f", "description": "", "parameters": {}}])


def test_cli_generate_and_pipe_send_the_blocks(tiny_model_dir, tiny):
    cli = str(Path(sys.executable).with_name("clova-edge"))
    want = len(tiny.encode("안녕"))
    assert want > len(encode_chat(tiny.template, tiny.tokenizer, [{"role": "user", "content": "안녕"}]))
    for args, stdin in ((["generate", "안녕", "-m", str(tiny_model_dir)], ""),
                        (["chat", str(tiny_model_dir)], "안녕\n")):
        out = subprocess.run([cli, *args, "--json", "--max-new-tokens", "1"], input=stdin,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["prompt_tokens"] == want
    out = subprocess.run([cli, "generate", "안녕", "-m", str(tiny_model_dir), "--json",
                          "--max-new-tokens", "1", "--system", ""],
                         capture_output=True, text=True, timeout=300)
    assert json.loads(out.stdout)["prompt_tokens"] == len(tiny.encode("안녕", system=None))
