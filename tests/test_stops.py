"""Stop strings: where generation stops is transformers' StopStringCriteria's answer; what is shown never
contains a stop string. Compared on scripted id sequences over the HyperCLOVAX stand-in tokenizer."""

import random

import pytest

from clova_edge import GenerationSettings
from clova_edge.runtime.stops import StopStrings, StopText
from fake_model import scripted_engine
from tokenizer_files import runtime_tokenizer, tokenizer_json

END, STOP, IM_END = "<|endofturn|>", "<|stop|>", "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return runtime_tokenizer("hyperclovax")


def _first_stop(tok, stops, prompt, generated):
    """The 1-based step at which StopStrings fires, or None."""
    m = StopStrings(stops, tok.token_bytes, prompt)
    return next((k for k, t in enumerate(generated, 1) if m.add(t) is not None), None)


def test_special_token_text_fires_on_its_id(tok):
    gen = tok.encode("Hi there", allow_special=False) + [tok.special_tokens[END], 42]
    assert _first_stop(tok, [END, STOP], [], gen) == len(gen) - 1
    assert _first_stop(tok, [STOP], [], gen) is None


def test_a_stop_string_may_begin_in_the_prompts_tail(tok):
    prompt = tok.encode("Assistant: fine.\n")
    gen = tok.encode("User:")
    assert _first_stop(tok, ["\nUser:"], prompt, gen) == len(gen)
    assert _first_stop(tok, ["\nUser:"], [], gen) is None
    # an occurrence wholly inside the prompt never fires
    assert _first_stop(tok, ["fine"], prompt, tok.encode(" ok")) is None


def test_held_back_keeps_only_possible_stop_prefixes(tok):
    for text, held in (("hello <|end", 5), ("hello <", 1), ("hello E", 1), ("hello EN", 2), ("hello", 0)):
        m = StopStrings((END, "END"), tok.token_bytes)
        for t in tok.encode(text):
            m.add(t)
        assert m.held() == held, text
    assert StopStrings((END,), tok.token_bytes).held() == 0


def test_shown_text_stops_before_the_stop_string_and_holds_back_prefixes(tok):
    text = StopText(tok, ["END"])
    shown = [text.add(t) for t in tok.encode("abc EN")]
    assert "".join(s for s, _ in shown) == "abc "         # "EN" could begin "END": held back
    assert text.add(tok.encode("D")[0]) == ("", True)
    prompt_tail = StopText(tok, ["\nUser:"], tok.encode("x\n"))
    assert [prompt_tail.add(t) for t in tok.encode("User:")][-1] == ("", True)
    special = StopText(tok, [END])
    assert special.add(tok.encode("hi")[0]) == ("hi", False)
    assert special.add(tok.special_tokens[END]) == ("", True)


def test_no_stop_strings_show_everything(tok):
    text = StopText(tok, [])
    ids = tok.encode("안녕하세요 😉 done")
    assert "".join(text.add(t)[0] for t in ids) + text.finish() == tok.decode(ids)


# ---- the same answer as transformers on scripted sequences -------------------------------------------------

STOP_SETS = [(END, STOP), ("\nUser:", "stop"), ("안녕", "END"), ("<|", "|>\n")]


def _pool(tok, stops):
    """Ids that make stop strings likely: whole, split, byte by byte, with overhangs; specials; noise."""
    by_bytes = {}
    for i in range(tok.vocab_size):
        b = tok.token_bytes(i)
        if len(b) == 1 and not tok.is_special(i):
            by_bytes.setdefault(b, i)
    pool = {tok.special_tokens[s] for s in (END, STOP, IM_END)}
    for s in stops:
        pool |= {by_bytes[bytes([c])] for c in s.encode() if bytes([c]) in by_bytes}
        for k in range(len(s) + 1):
            pool |= set(tok.encode(s[:k])) | set(tok.encode(s[k:])) | set(tok.encode("x" + s[k:] + "pped"))
    pool |= set(tok.encode("hello world\nUser: the stopper las topper 안녕하세요 ENDING"))
    return sorted(pool)


@pytest.mark.parametrize("stops", STOP_SETS)
def test_same_stopping_step_as_transformers(tok, stops):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers.generation.stopping_criteria import StopStringCriteria
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json("hyperclovax")))
    criteria = StopStringCriteria(hf_tok, list(stops))
    pool, rng = _pool(tok, stops), random.Random(14)
    fired = 0
    for _ in range(300):
        seq = [rng.choice(pool) for _ in range(rng.randint(1, 10))]
        p = rng.randint(0, len(seq) - 1)
        prompt, gen = seq[:p], seq[p:]
        want = next((k for k in range(1, len(gen) + 1)
                     if criteria(torch.tensor([prompt + gen[:k]]), None).item()), None)
        assert _first_stop(tok, stops, prompt, gen) == want, (stops, prompt, gen)
        fired += want is not None
    assert 20 <= fired <= 280     # the sample exercised both outcomes


# ---- the engine: the card's stop strings with no stop ids --------------------------------------------------

def test_card_stop_strings_stop_on_the_special_id_without_stop_ids(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["Seoul.<|im_end|><|endofturn|>more text"])
    engine.manifest = _without_stop_ids(engine.manifest)
    events = list(engine.stream("capital?", GenerationSettings(max_new_tokens=40)))
    assert "".join(e.text for e in events) == "Seoul."
    assert events[-1].finish_reason == "stop" and events[-1].n_generated < 10


def test_engine_stop_string_begun_in_the_prompt(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["User: more"])
    engine.manifest = _without_stop_ids(engine.manifest)
    settings = GenerationSettings(max_new_tokens=20, stop=("\nUser:",))
    events = list(engine.stream("Bot: hi\n", settings, chat_template=False))
    assert "".join(e.text for e in events) == "" and events[-1].finish_reason == "stop"


def _without_stop_ids(manifest):
    from dataclasses import replace
    return replace(manifest, stop_token_ids=())
