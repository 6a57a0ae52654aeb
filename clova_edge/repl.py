"""The interactive chat loop and the one-shot (pipe) answer behind `clova-edge chat` / `generate`."""

from __future__ import annotations

import datetime as dt
import json
import sys

from clova_edge.keys import AnswerKeys
from clova_edge.runtime.errors import ClovaEdgeError
from clova_edge.runtime.engine import Engine
from clova_edge.runtime.conversation import DEFAULT
from clova_edge.runtime.generate import Event
from clova_edge.runtime.settings import GenerationSettings

HELP = """commands: /reset (forget the conversation)  /system TEXT (new system prompt)  /stats  /help  /exit
/save FILE (the conversation with its KV cache)  /load FILE (continue a saved one)
end a line with \\ to continue on the next line; Ctrl-C stops an answer, Ctrl-D leaves"""


def default_system(engine: Engine, today: dt.date | None = None) -> str | None:
    """The model's default system prompt from the manifest ({today} becomes e.g. 2026년 11월 26일(목))."""
    return engine.default_system(today)


def _system(system: str | None):
    """--system not given: the model's default; --system "": none; else that text."""
    return DEFAULT if system is None else system


def _stats_line(e: Event | None, in_context: int, ctx: int) -> str:
    if e is None:
        return "context: empty (no answer since the start or /reset)"
    decode = f"decode {e.decode_tps:.1f} tok/s" if e.n_generated > 1 else "decode not timed"
    return (f"context: {in_context}/{ctx} tokens | last turn: {e.n_prompt} new prompt tokens, "
            f"{e.n_generated} generated, first token {e.ttft_s * 1000:.0f} ms, "
            f"prefill {e.prefill_tps:.0f} tok/s, {decode} ({e.finish_reason or 'interrupted'})")


def _read_message() -> str:
    """One message; a line ending in a backslash continues on the next line."""
    lines = [input(">>> ")]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(input("... "))
    return "\n".join(lines)


def run_repl(engine: Engine, settings: GenerationSettings, system: str | None, tools=None,
             load: str | None = None) -> None:
    try:
        import readline  # noqa: F401  (line editing and history, wide characters included, where available)
    except ImportError:
        pass
    session = engine.load_session(load) if load else engine.chat(system=_system(system), tools=tools,
                                                                  settings=settings)
    ctx = engine.model.config.context_length
    last = None   # the last turn's final event; None after /reset
    print(f"clova-edge chat: {engine.manifest.folder} "
          f"({engine.model.variant.name}, {engine.model.threads} threads). /help for commands.", flush=True)
    while True:
        try:
            text = _read_message()
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            continue
        command, _, arg = text.strip().partition(" ")
        if command in ("/exit", "/quit"):
            return
        if command == "/help":
            print(HELP)
        elif command == "/reset":
            session.reset()
            last = None
            print("(conversation cleared)")
        elif command == "/system":
            session.set_system(arg.strip() or None)
            print("(system prompt set)" if arg.strip() else "(system prompt removed)")
        elif command in ("/save", "/load"):
            if not arg.strip():
                print(f"(usage: {command} FILE)")
                continue
            try:
                if command == "/save":
                    session.save(arg.strip())
                else:
                    session, last = engine.load_session(arg.strip()), None
            except ClovaEdgeError as e:     # the chat goes on; the message says what is wrong
                print(f"error: {e}", file=sys.stderr, flush=True)
                continue
            print(f"({'saved' if command == '/save' else 'loaded'}: {session.tokens_in_context} tokens, "
                  f"{sum(m['role'] == 'user' for m in session.messages)} user turn(s))")
        elif command == "/stats":
            print(_stats_line(last, session.tokens_in_context, ctx))
        elif not text.strip():
            continue
        else:
            left = _answer(session, text)
            while not left and session.pending_calls:   # the model paused for tools: the user runs them
                results = _tool_results(session)
                left = results is None or _answer(session, text, session.add_tool_result(*results))
            last = session.last
            if left:
                return


def _tool_results(session) -> list[str] | None:
    """Show each call the model asked for and read its result (JSON or text); None on Ctrl-D."""
    results = []
    for call in session.pending_calls:
        print(f"[tool call] {call.name} {json.dumps(call.arguments, ensure_ascii=False)}", flush=True)
        try:
            results.append(input(f"result of {call.name}> "))
        except EOFError:
            print()
            return None
        except KeyboardInterrupt:   # the model is told, and answers without it
            print()
            results.append('{"error": "the user cancelled this call"}')
    return results


def _answer(session, text: str, events=None) -> bool:
    """Stream one answer (or the given events); True if Ctrl-D was pressed during it (the chat leaves)."""
    events = session.send(text) if events is None else events
    try:
        with AnswerKeys() as keys:
            for e in events:
                if e.notice:
                    print(f"({e.notice})", file=sys.stderr, flush=True)
                print(e.text, end="", flush=True)
                if keys.poll():
                    events.close()  # the turn is kept as far as it went
                    print("\n(stopped; Ctrl-D: leaving)", flush=True)
                    return True
        print()
    except KeyboardInterrupt:
        events.close()  # the turn is kept as far as it went
        print("\n(stopped)", flush=True)
    return False


def answer_once(engine: Engine, settings: GenerationSettings, text: str, *, system: str | None = None,
                json_out: bool = False, raw: bool = False, tools=None, json_schema=None,
                load: str | None = None) -> None:
    """Print only the answer (streamed), or one JSON object with text, token ids, finish reason and stats.
    load: the answer continues the chat saved there (text only)."""
    parts, ids, last = [], [], None
    if load is not None and json_out:
        raise ClovaEdgeError("--load continues a saved chat as text; it cannot be combined with --json")
    events = engine.load_session(load).send(text.rstrip("\n")) if load is not None else engine.stream(
        text.rstrip("\n"), settings, system=_system(system), tools=tools, chat_template=not raw,
        json_schema=json_schema)
    for e in events:
        if json_out:
            parts.append(e.text)
        else:
            sys.stdout.write(e.text)
            sys.stdout.flush()
        if e.token_id is not None:
            ids.append(e.token_id)
        last = e
    if json_out:
        # the prompt's opening may have come from the prompt cache: n_prompt counts only what was prefilled
        n = len(engine.encode(text.rstrip("\n"), system=_system(system), tools=tools, chat_template=not raw))
        print(json.dumps({"text": "".join(parts), "tokens": ids, "finish_reason": last.finish_reason,
                          "prompt_tokens": n, "cached_tokens": n - last.n_prompt,
                          "generated_tokens": last.n_generated,
                          "ttft_s": round(last.ttft_s, 4), "prefill_tps": round(last.prefill_tps, 2),
                          "decode_tps": round(last.decode_tps, 2),
                          "tool_calls": [c.to_dict() for c in last.tool_calls]}, ensure_ascii=False))
    else:
        print()
        for c in last.tool_calls:
            print(f"[tool call] {c.name} {json.dumps(c.arguments, ensure_ascii=False)}")
