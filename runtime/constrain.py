"""Constrained decoding: a JSON schema (or a regular expression) limits every sampled token, via llguidance.

llguidance (the grammar engine llama.cpp and onnxruntime-genai use; a Rust wheel with no Python dependencies)
computes, at each step, the set of token ids that keep the output a valid prefix of the grammar, as a bitmask
over the vocabulary; disallowed logits become -inf before the sampler runs, so greedy and sampled decoding
both stay inside the grammar, and once the grammar is complete only the model's end-of-turn ids remain. It is
optional: `pip install llguidance` (imported only when a constraint is asked for). This module does not sample
or run the model; generate.py calls mask() before sampling and advance() after.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from .errors import ConstraintError

# json.dumps' layout and no free whitespace: a small model given "any whitespace here" may write only that
# (a schema's own "x-guidance" options override these)
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise ConstraintError("constrained output (--json-schema, json_schema=, regex=) needs llguidance: "
                              "pip install llguidance") from None
    return llguidance


class _Vocabulary:
    """Our tokenizer as llguidance's TokenizerWrapper wants it: one bytes per id, and an encoder of str."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]):
        self.eos_token_id, self.bos_token_id = eos_ids[0], None
        # ids past the tokenizer's (padding rows of the embedding) have no bytes: never allowed as text
        self.tokens = [tokenizer.token_bytes(i) for i in range(vocab_size)]
        self.special_token_ids = sorted(tokenizer.special_tokens.values())
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        if not isinstance(text, str):   # so TokenizerWrapper passes str, not possibly partial UTF-8 bytes
            raise TypeError("text only")
        return self._tokenizer.encode(text, allow_special=False)


class Grammars:
    """Builds constraints for one tokenizer and vocabulary (the vocabulary index is built once: ~0.5 s)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]):
        if not eos_ids:
            raise ConstraintError("the model has no stop token ids: a constrained answer could never end")
        llg = _llguidance()
        self._llg, self.vocab_size = llg, vocab_size
        wrapper = llg.TokenizerWrapper(_Vocabulary(tokenizer, vocab_size, list(eos_ids)))
        self._tokenizer = llg.LLTokenizer(wrapper, n_vocab=vocab_size, eos_token=list(eos_ids))

    def json_schema(self, schema: Any) -> "Constraint":
        """An answer that is one JSON value valid against `schema` (a dict, or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ConstraintError(f"the JSON schema is not JSON ({e.msg} at {e.pos})") from None
        if not isinstance(schema, dict):
            raise ConstraintError(f"a JSON schema must be an object, got {type(schema).__name__}")
        try:
            grammar = self._llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
        except ValueError as e:
            raise ConstraintError(f"the JSON schema cannot be used: {e}") from None
        return self._constraint(grammar, "JSON schema")

    def regex(self, pattern: str) -> "Constraint":
        """An answer that matches `pattern` as a whole."""
        return self._constraint(self._llg.LLMatcher.grammar_from_regex(pattern), "regex")

    def tool_calls(self, tools: Sequence[dict], marks: dict[str, int]) -> "Constraint":
        """What may follow a HyperCLOVAX answer's <|im_end|> with tools on: <|endofturn|>, or one call block
        `\\n<|im_start|>assistant -> tool/function_call\\n{"name": ..., "input": {...}}<|im_end|><|stop|>`
        calling `tools` with arguments valid against their parameters (unsupported schema keywords are
        ignored, lenient). `marks`: the ids of <|im_start|>, <|im_end|>, <|endofturn|>, <|stop|>."""
        # the forms the family's parsers read (tools.py): one object with "input", or a list, "arguments"
        calls = [{"type": "object", "properties": {"name": {"const": t["name"]}, key: t["parameters"]},
                  "required": ["name", key], "additionalProperties": False}
                 for t in tools for key in ("input", "arguments")]
        schema = {"x-guidance": {**JSON_LAYOUT, "lenient": True},
                  "anyOf": [*calls, {"type": "array", "items": {"anyOf": calls}, "minItems": 1}]}
        start, end, eot, stop = (marks[t] for t in ("<|im_start|>", "<|im_end|>", "<|endofturn|>",
                                                     "<|stop|>"))
        lark = (f'start: <[{eot}]> | "\\n" <[{start}]> "assistant -> tool/function_call\\n" call '
                f"<[{end}]> <[{stop}]>\ncall: %json {json.dumps(schema)}")
        return self._constraint(lark, "tool call grammar")

    def _constraint(self, grammar: str, what: str) -> "Constraint":
        matcher = self._llg.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ConstraintError(f"the {what} cannot be compiled: {matcher.get_error()}")
        return Constraint(self._llg, matcher, self.vocab_size)


class Constraint:
    """One generation's grammar state: mask(logits) before each sample, advance(token) after."""

    def __init__(self, llg: Any, matcher: Any, vocab_size: int):
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
        self._matcher, self._fill, self.vocab_size = matcher, fill_next_token_bitmask, vocab_size
        self._bits = allocate_token_bitmask(1, vocab_size)          # (1, ceil(V / 32)) int32

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of `logits` (V,) with every id the grammar does not allow next set to -inf."""
        self._fill(self._matcher, self._bits)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: logits.shape[-1]]
        return np.where(allowed.astype(bool), logits, np.float32(-np.inf))

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(int(token)):     # cannot happen after mask(); a bug if it does
            raise ConstraintError(f"token {token} broke the grammar: {self._matcher.get_error()}")

    def reset(self) -> None:
        """Start over: the next token begins a new answer (the grammar is not compiled again)."""
        self._matcher.reset()

    @property
    def complete(self) -> bool:
        """The output so far is a whole, valid answer."""
        return self._matcher.is_accepting()


def load_json_schema(path: Any) -> dict:
    """A JSON schema from a file (for `--json-schema FILE`)."""
    from pathlib import Path
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConstraintError(f"{path}: cannot read the JSON schema ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConstraintError(f"{path}: not a JSON schema file ({e})") from None
    if not isinstance(schema, dict):
        raise ConstraintError(f"{path}: a JSON schema must be an object, got {type(schema).__name__}")
    return schema


class AfterToken:
    """A constraint that applies only once `trigger` has been sampled (the tool-call grammar: after the
    answer's <|im_end|>, whatever the model writes must be the end of the turn or a valid call block)."""

    def __init__(self, trigger: int, constraint: Constraint):
        self.trigger, self.inner, self.active = trigger, constraint, False

    def mask(self, logits: np.ndarray) -> np.ndarray:
        return self.inner.mask(logits) if self.active else logits

    def advance(self, token: int) -> None:
        if self.active:
            self.inner.advance(token)
        elif token == self.trigger:
            self.active = True
