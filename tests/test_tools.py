"""HyperCLOVAX tool calling: definitions in, calls parsed in every form the wild uses, the pause/resume of
<|stop|> / <|endofturn|>, the round trip's exact ids in the KV cache, and the CLI chat with --tools. The model
is scripted (tests/fake_model.py): protocol handling cannot be judged on random weights."""

import datetime as dt
import json

import pytest

from clova_edge import GenerationSettings
from clova_edge.runtime.chat import ChatSession
from clova_edge.runtime.errors import ToolCallError
from clova_edge.runtime.tools import ToolCall, load_tools, normalize_tools, parse_tool_calls, result_content
from fake_model import script_input, scripted_engine
from test_conversation import GOLDEN

TOOLS = next(c for c in GOLDEN["cases"] if c["name"] == "tool_round_trip")["tools"]
CALL = ('<|im_end|>\n<|im_start|>assistant -> tool/function_call\n'
        '{"name": "get_weather", "input": {"location": "서울"}}<|im_end|><|stop|>')
SETTINGS = GenerationSettings(max_new_tokens=60)
WEATHER = ToolCall("get_weather", {"location": "서울"})


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "input": {"location": "서울"}}',                      # the documentation
    '[{"name": "get_weather", "arguments": {"location": "서울"}}]',                # NAVER's vLLM parser
    '{"name": "get_weather", "parameters": {"location": "서울"}}',
    '{"name": "get_weather", "arguments": "{\\"location\\": \\"서울\\"}"}',        # OpenAI: a JSON string
])
def test_every_call_form_parses_to_the_same_call(text):
    assert parse_tool_calls(text) == (WEATHER,)


def test_several_calls_and_no_arguments():
    calls = parse_tool_calls('[{"name": "a", "input": {"x": 1}}, {"name": "b"}]')
    assert calls == (ToolCall("a", {"x": 1}), ToolCall("b", {}))


@pytest.mark.parametrize("text, error", [
    ('{"name": "f", "input": {', "not valid JSON"), ('{"input": {}}', "\"name\""),
    ('{"name": "f", "input": [1]}', "must be an object"), ('[]', "empty list"),
    ('{"name": "f", "arguments": "{x"}', "not JSON"),
])
def test_bad_calls_are_tool_call_errors(text, error):
    with pytest.raises(ToolCallError, match=error):
        parse_tool_calls(text)


def test_tool_definitions_openai_style_or_bare(tmp_path):
    bare = {"name": "f", "description": "d", "parameters": {"type": "object"}}
    assert normalize_tools([{"type": "function", "function": bare}]) == (bare,) == normalize_tools([bare])
    assert normalize_tools([{"name": "g"}])[0]["parameters"] == {"type": "object", "properties": {}}
    for bad, error in (({"name": "f"}, "list"), ([{"type": "retrieval"}], "not supported"), ([{}], "no name"),
                       ([{"name": "f", "parameters": "x"}], "schema")):
        with pytest.raises(ToolCallError, match=error):
            normalize_tools(bad)
    (tmp_path / "t.json").write_text(json.dumps({"tools": [bare]}))
    assert load_tools(tmp_path / "t.json") == (bare,)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ToolCallError, match="bad.json: not a JSON file"):
        load_tools(tmp_path / "bad.json")
    with pytest.raises(ToolCallError, match="cannot read"):
        load_tools(tmp_path / "missing.json")


def test_results_are_wrapped_as_the_protocol_says():
    assert result_content({"t": 21}) == '{"result": {"t": 21}}'
    assert result_content('{"t": 21}') == '{"result": {"t": 21}}'     # a JSON string is that JSON
    assert result_content("맑음") == '{"result": "맑음"}'


def _session(engine):
    case = next(c for c in GOLDEN["cases"] if c["name"] == "tool_round_trip")
    today = dt.date.fromisoformat(case["today"])
    return ChatSession(engine, tools=TOOLS, settings=SETTINGS, today=today), case


def test_round_trip_pauses_at_stop_resumes_with_the_result_and_keeps_the_cache(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir,
                             ["확인해 볼게요." + CALL, "서울은 21도, 맑아요.<|im_end|><|endofturn|>"])
    chat, case = _session(engine)
    events = list(chat.send("서울 날씨 어때?"))
    assert "".join(e.text for e in events) == "확인해 볼게요."          # the call block is never shown
    assert events[-1].finish_reason == "tool_calls" and events[-1].tool_calls == (WEATHER,)
    assert chat.pending_calls == (WEATHER,)
    with pytest.raises(ToolCallError, match="add_tool_result"):
        list(chat.send("hello?"))
    with pytest.raises(ToolCallError, match="give 1 result"):
        list(chat.add_tool_result(1, 2))
    events = list(chat.add_tool_result({"temperature": 21, "sky": "맑음"}))
    assert "".join(e.text for e in events) == "서울은 21도, 맑아요." and events[-1].finish_reason == "stop"
    assert not chat.pending_calls and events[-1].tool_calls == ()
    decode = engine.tokenizer.decode
    # the result turn prefilled only what the cache lacked: the <|stop|> it paused at, the result, the prompt
    assert decode(engine.model.prompts[1]) == ('<|stop|>\n<|im_start|>tool/function_call\n'
                                               '{"result": {"temperature": 21, "sky": "맑음"}}<|im_end|>\n'
                                               '<|im_start|>assistant\n')
    # what the cache holds is the golden round trip, then the answer (its <|endofturn|> ended the turn)
    assert decode(chat.cache.ids) == case["text"] + "서울은 21도, 맑아요.<|im_end|>"
    assert chat.engine.format.render_text(chat.messages[:-1]) == case["text"]


def test_with_tools_im_end_alone_does_not_stop_and_endofturn_does(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["Done.<|im_end|><|endofturn|>tail", "Done.<|im_end|>tail"])
    events = list(ChatSession(engine, tools=TOOLS, settings=SETTINGS).send("hi"))
    assert "".join(e.text for e in events) == "Done." and events[-1].n_generated == 3 + 1
    plain = list(engine.chat(settings=SETTINGS).send("hi"))      # no tools: <|im_end|> ends the turn
    assert "".join(e.text for e in plain) == "Done." and plain[-1].n_generated == 3


def test_one_shot_stream_with_tools_and_list_form_calls(tiny_model_dir):
    call = CALL.replace('{"name": "get_weather", "input": {"location": "서울"}}',
                        '[{"name": "get_weather", "arguments": {"location": "서울"}}, '
                        '{"name": "get_weather", "arguments": {"location": "부산"}}]')
    engine = scripted_engine(tiny_model_dir, [call])
    events = list(engine.stream("서울 날씨?", SETTINGS, tools=TOOLS))
    assert events[-1].tool_calls == (WEATHER, ToolCall("get_weather", {"location": "부산"}))
    assert events[-1].finish_reason == "tool_calls"
    assert "".join(e.text for e in events) == ""


def test_unconstrained_a_malformed_call_is_a_notice_not_a_crash(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, [CALL.replace('"input": {', '"input": {{')])
    chat = ChatSession(engine, tools=TOOLS, settings=SETTINGS, constrain_tools=False)
    events = list(chat.send("서울 날씨?"))
    assert "not valid JSON" in events[-1].notice and events[-1].finish_reason == "stop"
    assert not chat.pending_calls


STRICT = [{"type": "function", "function": {**TOOLS[0]["function"], "parameters": {
    **TOOLS[0]["function"]["parameters"], "additionalProperties": False}}}]


# (a scripted model cannot judge string contents: once forced into a string it never closes it)
@pytest.mark.parametrize("bad", ['"input": {"location": "서울", "unit": "C"}', '"name": "get_time"'])
def test_the_grammar_turns_whatever_the_model_writes_into_a_valid_call(tiny_model_dir, bad):
    pytest.importorskip("llguidance")
    wanted = CALL.replace('"input": {"location": "서울"}' if "input" in bad else '"name": "get_weather"', bad)
    engine = scripted_engine(tiny_model_dir, ["ok." + wanted])
    chat = ChatSession(engine, tools=STRICT, settings=GenerationSettings(max_new_tokens=80))
    events = list(chat.send("날씨?"))
    assert len(events[-1].tool_calls) == 1, engine.tokenizer.decode(chat.cache.ids[-60:])
    assert events[-1].finish_reason == "tool_calls"
    (call,) = events[-1].tool_calls       # the unknown tool / the extra argument could not be written
    assert call.name == "get_weather" and set(call.arguments) == {"location"}
    unconstrained = scripted_engine(tiny_model_dir, ["ok." + wanted])
    chat = ChatSession(unconstrained, tools=STRICT, settings=SETTINGS, constrain_tools=False)
    assert list(chat.send("날씨?"))[-1].tool_calls != (WEATHER,)


def test_cli_chat_shows_calls_and_reads_results(tiny_model_dir, monkeypatch, capsys):
    from clova_edge import repl
    engine = scripted_engine(tiny_model_dir, ["확인해 볼게요." + CALL, "21도예요.<|im_end|><|endofturn|>"])
    script_input(monkeypatch, ["서울 날씨 어때?", '{"temperature": 21}'], echo=True)
    repl.run_repl(engine, SETTINGS, None, tools=normalize_tools(TOOLS))
    out = capsys.readouterr().out
    assert '[tool call] get_weather {"location": "서울"}\nresult of get_weather> ' in out
    assert "21도예요." in out
    assert engine.tokenizer.decode(engine.model.prompts[1]).startswith(
        '<|stop|>\n<|im_start|>tool/function_call\n{"result": {"temperature": 21}}<|im_end|>')
