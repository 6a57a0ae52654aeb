"""clova-edge with a JSON-schema constraint on every token (benchmarks/constrained.py's SCHEMA, llguidance).

The loop is clova.py's (the runtime's prefill, then one decode per token, greedy, EOS ignored) with the
runtime's Constraint around each pick: mask(logits), argmax, advance(token), as runtime/generate.py does it.
When an answer is complete (the grammar allowed only the end-of-turn ids and one was taken) the matcher
starts the next answer, so the decode always runs the n tokens asked for. mask() + advance() of every token
after the first of a call (the steps inside the protocol's decode gaps) is timed; report() gives the summary
and a paired comparison (plain and constrained decodes in turn, in this process).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from clova_edge.benchmarks.constrained import SCHEMA
from clova_edge.benchmarks.peers.clova import ClovaAdapter
from clova_edge.benchmarks.protocol import Spec, synthetic_prompt


class ClovaJsonAdapter(ClovaAdapter):
    def load(self, threads: int) -> None:
        super().load(threads)
        t0 = time.perf_counter()
        self.engine.constraint(json_schema=SCHEMA)          # the vocabulary index: built once per engine
        self.index_s = time.perf_counter() - t0
        # the ids the grammar ends an answer with (Engine.grammars' end-of-turn ids)
        self.ends = set(self.engine.format.turn_stop_ids(self.engine.manifest.stop_token_ids, False))
        self.mask_s: list[float] = []
        self.answers = 0

    def generate(self, prompt_ids: list[int], n: int) -> list[float]:
        constraint = self.engine.constraint(json_schema=SCHEMA)
        cache = self.model.new_cache(len(prompt_ids) + n)
        logits = self.model.prefill(cache, np.asarray(prompt_ids, np.int64))
        arrivals: list[float] = []
        self.tokens: list[int] = []          # the last call's ids (tests check they follow the grammar)
        while True:
            t0 = time.perf_counter()
            token = int(np.argmax(constraint.mask(logits)))
            constraint.advance(token)
            self.tokens.append(token)
            if token in self.ends:                # an answer is complete: the next token begins another
                constraint.reset()
                self.answers += 1
            arrivals.append(time.perf_counter())
            if len(arrivals) > 1:
                self.mask_s.append(arrivals[-1] - t0)
            if len(arrivals) == n:
                return arrivals
            logits = self.model.decode(cache, token)

    def paired(self, spec: Spec) -> dict[str, Any]:
        """Plain and constrained decodes in turn (2 x the spec's repetitions each), in this process, same
        prompts: a ratio that contention from other processes shifts alike on both sides (the two rows of a
        run may meet different loads)."""
        plain: list[float] = []
        masked: list[float] = []
        for r in range(2 * spec.repetitions):
            ids = synthetic_prompt(spec.short_context, spec, salt=300 + r)
            plain += np.diff(ClovaAdapter.generate(self, ids, spec.decode_tokens + 1)).tolist()
            masked += np.diff(self.generate(ids, spec.decode_tokens + 1)).tolist()
        ms = lambda xs: {"median": 1e3 * float(np.median(xs)), "mean": 1e3 * float(np.mean(xs))}  # noqa: E731
        return {"context": spec.short_context, "steps": len(plain), "plain_step_ms": ms(plain),
                "constrained_step_ms": ms(masked)}

    def report(self, spec: Spec) -> dict[str, Any]:
        paired = self.paired(spec)
        ms = np.asarray(self.mask_s, np.float64) * 1e3
        summary = {} if not ms.size else {
            "median": float(np.median(ms)), "mean": float(ms.mean()), "p90": float(np.percentile(ms, 90)),
            "max": float(ms.max()), "n": int(ms.size)}
        return {"constraint": {"schema": SCHEMA, "vocab_size": self.model.config.vocab_size,
                               "index_build_s": self.index_s, "mask_ms": summary,
                               "answers_completed": self.answers, "paired": paired}}


def make_adapter(model: Path, variant: str | None = None) -> ClovaJsonAdapter:
    return ClovaJsonAdapter(model, variant)
