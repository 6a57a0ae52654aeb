"""Hugging Face Optimum (optimum-onnx): ORTModelForCausalLM on its text-generation-with-past export, through
its own generate (the transformers loop over an onnxruntime session). Runs in its own venv (transformers
< 4.58)."""

from __future__ import annotations

from pathlib import Path

from .torch_fp32 import HFGenerateAdapter


class OptimumAdapter(HFGenerateAdapter):
    def load(self, threads: int) -> None:
        import onnxruntime as ort
        import optimum.onnxruntime as oo
        import torch

        torch.set_num_threads(threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.version = f"optimum-onnx, onnxruntime {ort.__version__}"
        self.model = oo.ORTModelForCausalLM.from_pretrained(self.folder, session_options=so, use_cache=True,
                                                            provider="CPUExecutionProvider")
        # optimum-onnx sizes the empty past KV of a llama model as hidden_size / heads (64 here) and ignores
        # the config's head_dim (128 for HyperCLOVAX): onnxruntime then rejects the first step. A user would
        # need the same one-line workaround.
        head_dim = getattr(self.model.config, "head_dim", None)
        if head_dim and getattr(self.model, "embed_size_per_head", head_dim) != head_dim:
            self.model.embed_size_per_head = head_dim


def make_adapter(model: Path, variant: str | None = None) -> OptimumAdapter:
    return OptimumAdapter(model)
