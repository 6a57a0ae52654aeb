"""The exporter: verified folders for the tiny HyperCLOVAX-shaped model and SmolLM2, the graph it writes,
atomic output, and the errors a user can cause. The two exports come from the session fixtures
(conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from clova_edge.export import pipeline, source
from clova_edge.export.llama import from_hf_state_dict
from clova_edge.export.testmodels import build
from clova_edge.runtime.errors import ExportError
from clova_edge.runtime.manifest import load_manifest, verify_files


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _graph(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def test_tiny_manifest(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    raw = m.raw
    assert m.config.num_hidden_layers == 2 and m.config.vocab_size == 110592
    assert m.config.context_length == 4096           # HyperCLOVAX family: the card's 4K, not config's 8192
    assert m.stop_strings == ("<|endofturn|>", "<|stop|>")
    assert {100273, 100274, 100275, 100257} <= set(m.stop_token_ids)
    assert m.generation["repetition_penalty"] == 1.2
    assert raw["io"]["shared_buffer"] and raw["io"]["rotary_in_cache"] and raw["io"]["kv_layout"] == "BNSH"
    v = raw["verification"]["fp32"]
    assert v["tokens_equal"] and v["steps"] >= 16 and v["max_rel_diff"] <= v["tolerance_rel"]
    assert raw["source"]["architecture"] == "LlamaForCausalLM"
    verify_files(m)   # sizes and checksums as recorded


def test_smollm2_manifest(smollm2_model_dir):
    m = load_manifest(smollm2_model_dir)
    assert (smollm2_model_dir / "tokenizer.json").is_file()
    assert "chat_template" in json.loads((smollm2_model_dir / "tokenizer_config.json").read_text())
    assert set(m.stop_token_ids) >= {0, 2}             # <|endoftext|>, <|im_end|>
    assert m.stop_strings == () and m.generation["repetition_penalty"] == 1.0
    v = m.raw["verification"]["fp32"]
    assert v["tokens_equal"] and v["max_rel_diff"] < 1e-4   # real weights: fp32 noise only


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "smollm2_model_dir"])
def test_graph_uses_fused_ops_and_one_table(fixture, request):
    folder = request.getfixturevalue(fixture)
    g = _graph(folder).graph
    layers = load_manifest(folder).config.num_hidden_layers
    ops = [n.op_type for n in g.node]
    assert ops.count("GroupQueryAttention") == layers
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * layers
    assert ops.count("Gemm") == 1 and ops.count("MatMul") == 4 * layers
    gqa = next(n for n in g.node if n.op_type == "GroupQueryAttention")
    assert {a.name: a.i for a in gqa.attribute}["do_rotary"] == 1
    dims = {t.name: tuple(t.dims) for t in g.initializer}
    c = load_manifest(folder).config
    assert (c.hidden_size, c.vocab_size) not in dims.values()       # no transposed copy of the table
    assert sum(d == (c.vocab_size, c.hidden_size) for d in dims.values()) == 1
    first = [i.name for i in g.input][:4]
    assert first == ["input_ids", "seqlens_k", "total_sequence_length", "logits_index"]


def test_eager_module_matches_transformers_with_cache():
    """The export module's pure-torch path: prefill + decode through its buffers == one HF forward."""
    from transformers import AutoModelForCausalLM

    src = source.resolve(build("tiny"))
    config = source.model_config(src, 64)
    hf = AutoModelForCausalLM.from_pretrained(src.folder, dtype=torch.float32).eval()
    model = from_hf_state_dict(config, hf.state_dict())
    ids = torch.tensor([[5, 900, 17, 3000, 42, 7]])
    kv = [torch.zeros(1, config.num_key_value_heads, 16, config.head_dim) for _ in range(4)]
    with torch.no_grad():
        ref = hf(ids).logits[0]
        out = model(ids[:, :4], torch.tensor([3], dtype=torch.int32), torch.tensor(4, dtype=torch.int32),
                    torch.arange(4), *kv)
        got = [out[0][0]]
        for t in (4, 5):
            out = model(ids[:, t:t + 1], torch.tensor([t], dtype=torch.int32),
                        torch.tensor(t + 1, dtype=torch.int32), torch.tensor([0]), *out[1:])
            got.append(out[0][0])
    assert torch.allclose(torch.cat(got), ref, atol=1e-5)


def test_existing_folder_is_refused(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    with pytest.raises(ExportError, match="already exists.*--force"):
        pipeline.export_model(build("tiny"), out)


def test_failure_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("old")

    def boom(*_a, **_k):
        raise ExportError("simulated failure while loading")

    monkeypatch.setattr(pipeline.S, "load_hf_model", boom)
    with pytest.raises(ExportError, match="simulated"):
        pipeline.export_model(build("tiny"), out, force=True, quantize=())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]          # no partial folder left
    assert (out / "keep.txt").read_text() == "old"


def test_replace_atomically(tmp_path):
    new, out = tmp_path / ".new", tmp_path / "out"
    new.mkdir()
    (new / "a").write_text("new")
    out.mkdir()
    (out / "b").write_text("old")
    pipeline._replace_atomically(new, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["a"]


def test_not_enough_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda _p: type("U", (), {"free": 10_000_000})())
    with pytest.raises(ExportError, match="not enough disk"):
        pipeline.export_model(build("tiny"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_missing_path_is_not_a_hub_id(tmp_path):
    with pytest.raises(ExportError, match="no such folder"):
        source.resolve(tmp_path / "nothing" / "here")


def test_unreachable_hub_id(monkeypatch):
    import huggingface_hub

    def offline(*_a, **_k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ExportError, match="cannot download.*internet"):
        source.resolve("naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"],
                                                       "model_type": "mistral"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ExportError, match="MistralForCausalLM.*not supported.*LlamaForCausalLM"):
        source.resolve(tmp_path)


def test_folder_without_weights(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="no weights"):
        source.resolve(tmp_path)


def test_rope_scaling_refused(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    with pytest.raises(ExportError, match="rope scaling llama3"):
        source.check_supported(cfg, "x")


@pytest.mark.slow
def test_untied_lm_head_exports_and_verifies(tmp_path):
    """A model with its own lm_head (not tied): the Gemm reads lm_head, the embedding stays a Gather."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
                      tie_word_embeddings=False, rope_theta=10000.0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "src")
    out = pipeline.export_model(tmp_path / "src", tmp_path / "out", quantize=())
    m = _manifest(out)
    assert m["model"]["tie_word_embeddings"] is False and m["model"]["context_length"] == 128
    assert m["verification"]["fp32"]["tokens_equal"]
    assert m["graph"]["lm_head"]["weight"] == "lm_head" and m["graph"]["embedding"] == "embed_tokens"


def test_unknown_quantization_is_refused_before_work(tmp_path):
    with pytest.raises(ExportError, match="unknown quantization.*int8, int4"):
        pipeline.export_model(build("tiny"), tmp_path / "out", quantize=("int3",))


@pytest.mark.slow
def test_full_size_model_exports_and_verifies(tmp_path):
    """The full-size random HyperCLOVAX-shaped model (566,281,216 parameters): ~4 min, ~7.7 GB peak RSS."""
    out = pipeline.export_model(build("full"), tmp_path / "full", quantize=())
    m = _manifest(out)
    assert m["source"]["parameters"] == 566_281_216 and m["model"]["context_length"] == 4096
    assert m["verification"]["fp32"]["tokens_equal"]
    assert m["graph"]["operators"]["GroupQueryAttention"] == 24
