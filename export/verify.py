"""Check an exported graph against the Hugging Face PyTorch model: prefill, then greedy decode via the cache.

The ONNX side is driven by the runtime's own driver (runtime/model.py OnnxModel): one preallocated buffer per
layer K and V bound as both past and present (GroupQueryAttention's shared buffer, written in place). The
prefill asks for the logits of every prompt position (the perplexity path), each decode step for one. Both
sides are fed the reference model's greedy token (teacher forcing), so one near-tie cannot derail the
comparison.

Tolerance: |onnx - torch| <= LOGIT_RTOL * max(1, max|torch logits|) at every position and step. Both sides
compute in fp32; they differ only in summation order (MLAS vs ATen GEMMs, fused RMSNorm, GQA's softmax), which
measures ~1e-6 relative per op and stays around 1e-5 relative after 30 layers (see the numbers this records).
A structural error (wrong rotary layout, wrong KV head grouping, a cache row off by one) moves logits by
several percent of their range. 1e-3 sits well above the noise and far below any such bug. Greedy tokens
must match, except where the reference's own top-2 margin is smaller than the tolerance (a tie that fp32
rounding may break either way): those are counted.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clova_edge.runtime.errors import ExportError
from clova_edge.runtime.manifest import Manifest, ModelConfig
from clova_edge.runtime.model import OnnxModel

LOGIT_RTOL = 1e-3
DEFAULT_STEPS = 16
PROMPT = ("<|im_start|>user\n안녕하세요! Explain in one sentence why the sky is blue.<|im_end|>\n"
          "<|im_start|>assistant\n")
FALLBACK_IDS = (1, 17, 300, 4000, 9, 52, 611, 23, 88, 1024, 5, 77)


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    max_rel_diff: float        # max_abs_diff / max(1, max|reference logits|)
    tolerance_rel: float
    tokens_equal: bool
    near_ties: int             # steps where tokens differed inside a reference near-tie
    steps: int                 # decode steps after the prefill
    prompt_tokens: int
    tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_ids(folder: Path, vocab_size: int) -> list[int]:
    """The verification prompt, tokenized with the folder's tokenizer.json when it has one."""
    path = folder / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(path)).encode(PROMPT, add_special_tokens=False).ids
        if ids and max(ids) < vocab_size:
            return ids
    return [i % vocab_size for i in FALLBACK_IDS]


class _OnnxRunner:
    """The graph through the runtime's driver (runtime/model.py): in-place KV buffers, one run per step."""

    def __init__(self, onnx_path: Path, config: ModelConfig, capacity: int, threads: int):
        bare = Manifest(folder=Path(onnx_path).parent, raw={}, config=config, variants={}, bos_token_id=None,
                        stop_token_ids=(), stop_strings=(), generation={}, tokenizer_file="",
                        tokenizer_config_file="")        # no manifest is written yet: only the config counts
        self.model = OnnxModel.from_graph(bare, onnx_path, threads=threads)
        self.cache = self.model.new_cache(capacity)

    def step(self, ids: list[int], all_logits: bool) -> np.ndarray:
        """Run S new tokens on top of the cache; logits [S or 1, vocab]."""
        if all_logits:
            return self.model.prefill(self.cache, np.asarray(ids, np.int64), all_logits=True)
        assert len(ids) == 1, "decode steps are one token"
        return np.array(self.model.decode(self.cache, ids[0]))[None]   # the runtime's decode binding


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def verify(onnx_path: Path, hf_model: Any, config: ModelConfig, ids: list[int], *,
           steps: int = DEFAULT_STEPS, threads: int = 2) -> Parity:
    """Compare the graph with hf_model (LlamaForCausalLM, fp32). Raises ExportError when parity fails."""
    import torch

    if len(ids) + steps + 1 > config.context_length:
        raise ValueError(f"verification needs {len(ids) + steps + 1} positions, "
                         f"context is {config.context_length}")
    # transformers renamed past_key_values -> cache (5.2x); speak whichever this version takes.
    cache_kw = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
    runner = _OnnxRunner(onnx_path, config, capacity=len(ids) + steps + 8, threads=threads)
    max_abs, scale, ties, equal, tokens = 0.0, 1.0, 0, True, []
    with torch.no_grad():
        out = hf_model(torch.tensor([ids]), use_cache=True)
        ref, cache = out.logits[0].float().numpy(), _cache_of(out)
        got = runner.step(ids, all_logits=True)
        for step in range(steps + 1):
            if got.shape != ref.shape:
                raise ExportError(f"{onnx_path}: logits shape {got.shape} != reference {ref.shape} "
                                  f"at step {step}")
            max_abs = max(max_abs, float(np.abs(got - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
            want, have = int(ref[-1].argmax()), int(got[-1].argmax())
            if want != have:
                top2 = np.sort(ref[-1])[-2:]
                if top2[1] - top2[0] <= LOGIT_RTOL * scale:
                    ties += 1
                else:
                    equal = False
            tokens.append(want)
            if step == steps:
                break
            out = hf_model(torch.tensor([[want]]), use_cache=True, **{cache_kw: cache})
            ref, cache = out.logits[0].float().numpy(), _cache_of(out)
            got = runner.step([want], all_logits=False)
    parity = Parity(max_abs_diff=max_abs, max_rel_diff=max_abs / scale, tolerance_rel=LOGIT_RTOL,
                    tokens_equal=equal, near_ties=ties, steps=steps, prompt_tokens=len(ids), tokens=tokens)
    if parity.max_rel_diff > LOGIT_RTOL or not equal:
        raise ExportError(f"{onnx_path}: the ONNX graph does not match PyTorch (max |diff| {max_abs:.3g}, "
                          f"relative {parity.max_rel_diff:.3g} > {LOGIT_RTOL}, "
                          f"greedy tokens equal: {equal}); "
                          "this is an exporter bug - please report it with the model id")
    return parity
