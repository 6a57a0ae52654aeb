"""PyTorch + transformers, fp32, the model card's way: `model.generate` (greedy), timed by a streamer.

The streamer's put() is called with the prompt first and then once per new token, so each later call is a
token's arrival. min_new_tokens = max_new_tokens keeps EOS from ending a run early.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class ArrivalStreamer:
    """A transformers streamer that records when each generated token arrives (the first put is the
    prompt)."""

    def __init__(self):
        self.calls: list[float] = []

    def put(self, value) -> None:
        self.calls.append(time.perf_counter())

    def end(self) -> None:
        pass


class HFGenerateAdapter:
    """Shared by torch_fp32 and optimum: anything with transformers' generate()."""

    def __init__(self, folder: Path):
        self.folder, self.model = folder, None

    def generate(self, prompt_ids: list[int], n: int) -> list[float]:
        import torch

        streamer = ArrivalStreamer()
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        with torch.inference_mode():
            self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, streamer=streamer, pad_token_id=0)
        return streamer.calls[1:]

    def logits(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.tensor(np.asarray(ids, np.int64)[None])
            return self.model(x, attention_mask=torch.ones_like(x)).logits[0].float().numpy()


class TorchAdapter(HFGenerateAdapter):
    def load(self, threads: int) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"
        self.model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32).eval()


def make_adapter(model: Path, variant: str | None = None) -> TorchAdapter:
    return TorchAdapter(model)
