"""Tool calling in HyperCLOVAX's protocol: OpenAI-style definitions in, structured calls out.

Protocol (HyperCLOVAX-SEED family documentation): the tools are a JSON list of {"name", "description",
"parameters"} in the `tool_list` block. After its text the model closes its block and writes a call block,
`<|im_start|>assistant -> tool/function_call\\n{"name": ..., "input": {...}}<|im_end|><|stop|>`: `<|stop|>` =
pause, a tool must run; `<|endofturn|>` = the turn is over. A result goes back as a `tool/function_call`
message whose content is `{"result": ...}`. Parsers in the wild disagree on the call's JSON (a single object
with `input`, or NAVER's vLLM parser's list with `arguments`), so every form is read: object or list, and
`input` / `arguments` / `parameters` (an object, or a JSON string of one as OpenAI sends it).
This module is pure data: it neither renders prompts (conversation.py) nor runs the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ToolCallError

Tool = Mapping[str, Any]
_ARGUMENT_KEYS = ("input", "arguments", "parameters")
_CALL = re.compile(r"\s*<\|im_start\|>assistant -> tool/function_call\n(.*?)<\|im_end\|>", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: the tool's name and its parsed arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


def normalize_tools(tools: Sequence[Tool] | None) -> tuple[dict[str, Any], ...]:
    """OpenAI-style definitions ({"type": "function", "function": {...}}) or bare {"name", ...} ones, as the
    tool_list wants them: {"name", "description", "parameters"}."""
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ToolCallError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ToolCallError(f"tools[{i}] must be a dict, got {type(tool).__name__}")
        if tool.get("type", "function") != "function":
            raise ToolCallError(f"tools[{i}]: type {tool.get('type')!r} is not supported; use \"function\"")
        spec = tool.get("function", tool)
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ToolCallError(f"tools[{i}] has no name: give {{\"type\": \"function\", \"function\": "
                                "{\"name\": ..., \"description\": ..., \"parameters\": {...}}}")
        params = spec.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            raise ToolCallError(f"tools[{i}] ({name}): parameters must be a JSON schema object")
        out.append({"name": name, "description": str(spec.get("description", "")),
                    "parameters": dict(params)})
    return tuple(out)


def tool_list_content(tools: Sequence[Tool]) -> str:
    """The tool_list block's content: the JSON list, or "" (an empty block) without tools."""
    return json.dumps(list(tools), ensure_ascii=False) if tools else ""


def call_block(calls: Sequence[ToolCall | Mapping[str, Any]]) -> str:
    """A call block's JSON in the documentation's form (one object with "input"; a list for several)."""
    objs = [{"name": c.name, "input": c.arguments} if isinstance(c, ToolCall)
            else {"name": c["name"], "input": c.get("arguments", {})} for c in calls]
    return json.dumps(objs[0] if len(objs) == 1 else objs, ensure_ascii=False)


def result_content(result: Any) -> str:
    """A tool result message's content: {"result": ...} (a str result that is JSON is sent as that JSON)."""
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except json.JSONDecodeError:
            pass
    try:
        return json.dumps({"result": result}, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ToolCallError(f"a tool result must be JSON-serializable ({e})") from None


def parse_tool_calls(text: str) -> tuple[ToolCall, ...]:
    """The calls in a call block's JSON: an object or a list of objects, arguments under any known key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"the model's tool call is not valid JSON ({e.msg} at {e.pos}): "
                            f"{text[:80]!r}") from None
    calls = []
    for obj in data if isinstance(data, list) else [data]:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str):
            raise ToolCallError(f"a tool call must be an object with a \"name\": {json.dumps(obj)[:80]}")
        args = next((obj[k] for k in _ARGUMENT_KEYS if k in obj), {})
        if isinstance(args, str):            # OpenAI style: the arguments as a JSON string
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise ToolCallError(f"tool call {obj['name']}: arguments are not JSON: "
                                    f"{args[:80]!r}") from None
        if not isinstance(args, Mapping):
            raise ToolCallError(f"tool call {obj['name']}: arguments must be an object, "
                                f"got {json.dumps(args)[:80]}")
        calls.append(ToolCall(obj["name"], dict(args)))
    if not calls:
        raise ToolCallError("the model's tool call block is an empty list")
    return tuple(calls)


def find_call_block(tail: str) -> str | None:
    """The JSON of a complete call block at the start of `tail` (the text after the model's first
    <|im_end|>, special tokens written out), or None if there is none."""
    m = _CALL.match(tail)
    return m.group(1) if m else None


def load_tools(path: str | Path) -> tuple[dict[str, Any], ...]:
    """Tool definitions from a JSON file (a list, or {"tools": [...]}), normalized."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ToolCallError(f"{path}: cannot read the tools file ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ToolCallError(f"{path}: not a JSON file of tool definitions ({e})") from None
    return normalize_tools(data.get("tools") if isinstance(data, dict) else data)
