"""Greedy decoding with repetition_penalty 1.2 gives the same tokens as transformers' generate."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from clova_edge import Engine, GenerationSettings  # noqa: E402
from clova_edge.export import testmodels  # noqa: E402
from clova_edge.runtime.generate import generate_tokens  # noqa: E402

N_TOKENS = 64
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? Explain in a few sentences."}]


def _hf_greedy(hf_dir, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    config = transformers.GenerationConfig(max_new_tokens=N_TOKENS, do_sample=False, repetition_penalty=1.2,
                                           eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=config)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("name,fixture", [("smollm2", "smollm2_model_dir"), ("tiny", "tiny_model_dir")])
def test_greedy_tokens_equal_transformers_generate(name, fixture, request):
    engine = Engine.load(request.getfixturevalue(fixture), variant="fp32", threads=2)
    hf_dir = testmodels.build(name)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ids = engine.encode_messages(MESSAGES)   # exactly these (encode() adds HyperCLOVAX's tool_list)
    assert ids == list(hf_tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    settings = GenerationSettings(max_new_tokens=N_TOKENS, temperature=0.0, repetition_penalty=1.2)
    cache = engine.model.new_cache(len(ids) + N_TOKENS)
    ours = list(generate_tokens(engine.model, cache, ids, settings, stop_ids=()))
    assert ours == _hf_greedy(hf_dir, ids)
