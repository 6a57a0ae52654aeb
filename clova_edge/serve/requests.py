"""The request bodies of the OpenAI API this server speaks, validated with pydantic, and what they mean here.

Fields OpenAI defines that do not change what this server computes (user, logprobs=false, presence and
frequency penalties at 0, parallel_tool_calls, metadata...) and unknown fields are ignored; a field of the
wrong type is a 400 naming it. Omitted sampling fields take the model's defaults from its manifest (for
HyperCLOVAX, repetition_penalty 1.2), as `clova-edge chat` does; `repetition_penalty`, `top_k`, `min_p` and
`ignore_eos` are accepted as extensions (llama-server and vLLM accept them too).
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from clova_edge.runtime.conversation import TOOL_ROLE
from clova_edge.runtime.errors import PromptError
from clova_edge.runtime.tools import ToolCall, parse_tool_calls, result_content


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Body):
    type: str
    text: str = ""


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Body):
    id: str = ""
    type: str = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None

    def text(self) -> str:
        if isinstance(self.content, list):      # content parts: only text parts exist for this model
            if any(p.type != "text" for p in self.content):
                raise PromptError("only text content parts are supported (this model reads text)")
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaFormat(_Body):
    name: str = "answer"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None


class _Sampling(_Body):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1, le=1)       # one answer per request (n > 1 is a 400)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    repetition_penalty: Optional[float] = Field(None, gt=0)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, lt=1)
    ignore_eos: bool = False

    def settings_overrides(self, max_tokens: int) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return {"max_new_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "stop": tuple(stop) if stop else None, "top_k": self.top_k,
                "min_p": self.min_p, "repetition_penalty": self.repetition_penalty}

    def requested_tokens(self) -> Optional[int]:
        return self.max_tokens


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Union[str, dict[str, Any], None] = None
    response_format: Optional[ResponseFormat] = None

    def requested_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def json_schema(self) -> Any:
        """The schema the answer must validate against, or None."""
        f = self.response_format
        if f is None or f.type == "text":
            return None
        if f.type == "json_object":
            return {"type": "object"}
        if f.json_schema is None:
            raise PromptError("response_format json_schema needs a json_schema object with a schema")
        return f.json_schema.schema_ or {"type": "object"}

    def use_tools(self) -> bool:
        """Whether the model may call the declared tools (tool_choice "auto", the default, or "none")."""
        choice = self.tool_choice
        if choice in (None, "auto"):
            return bool(self.tools)
        if choice == "none":
            return False
        raise PromptError(f"tool_choice {json.dumps(choice)[:60]} is not supported: use \"auto\" or \"none\"")

    def chat_messages(self) -> list[dict[str, Any]]:
        """The messages in the runtime's form: developer is system, a tool result is a tool/function_call
        message, an assistant's tool_calls are the calls of its block."""
        out = []
        for m in self.messages:
            role = {"developer": "system", "tool": TOOL_ROLE}.get(m.role, m.role)
            content = result_content(m.text()) if m.role == "tool" else m.text()
            msg: dict[str, Any] = {"role": role, "content": content}
            if m.role == "assistant" and m.tool_calls:
                msg["tool_calls"] = [_call(c) for c in m.tool_calls]
            out.append(msg)
        return out


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise PromptError("give one prompt per request (a list of several is a batch: not supported)")
            return self.prompt[0]
        return self.prompt


def _call(c: ToolCallIn) -> ToolCall:
    return parse_tool_calls(json.dumps({"name": c.function.name, "arguments": c.function.arguments}))[0]
