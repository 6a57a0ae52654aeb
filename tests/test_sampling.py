"""Sampling: hand-computed 4-element vectors, no input mutation, greedy = argmax, seeded reproducibility,
edge cases, and agreement with transformers' own logits processors on random logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clova_edge.runtime.errors import PromptError
from clova_edge.runtime.sampling import (
    PenaltyState, apply_min_p, apply_repetition_penalty, apply_temperature, apply_top_k, apply_top_p,
    make_sampler, sample, softmax,
)
from clova_edge.runtime.settings import GenerationSettings as G

NEG = -np.inf
LOGP = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))   # probabilities 0.5, 0.3, 0.15, 0.05


def f32(*xs):
    return np.array(xs, dtype=np.float32)


# ---- hand-computed vectors ---------------------------------------------------------------------------------

def test_repetition_penalty_by_hand():
    logits = f32(2.0, -1.0, 0.5, 3.0)
    # ids 0 and 1 (1 twice: penalised once), id 3 not seen: positive / 2, negative * 2
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [1, 0, 1], 2.0), f32(1.0, -2.0, 0.5, 3.0))
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [], 2.0), logits)
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [0, 1], 1.0), logits)
    # a penalty < 1 rewards repetition, with the same formula
    np.testing.assert_array_equal(apply_repetition_penalty(logits, [0, 1], 0.5), f32(4.0, -0.5, 0.5, 3.0))
    # zero is "not negative": divided, stays 0
    assert apply_repetition_penalty(f32(0.0, 1.0), np.array([0]), 1.2)[0] == 0.0


def test_temperature_by_hand():
    np.testing.assert_allclose(apply_temperature(f32(1, 2, 3, 4), 2.0), f32(0.5, 1, 1.5, 2))
    assert apply_temperature(f32(1, 2), 0.5).dtype == np.float32
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(f32(1, 2), 0.0)


def test_top_k_by_hand():
    np.testing.assert_array_equal(apply_top_k(f32(1, 3, 2, 0), 2), f32(NEG, 3, 2, NEG))
    np.testing.assert_array_equal(apply_top_k(f32(1, 3, 3, 0), 1), f32(NEG, 3, 3, NEG))   # ties survive
    np.testing.assert_array_equal(apply_top_k(f32(1, 3, 2, 0), 0), f32(1, 3, 2, 0))        # off
    np.testing.assert_array_equal(apply_top_k(f32(1, 3, 2, 0), 9), f32(1, 3, 2, 0))        # k > vocab


def test_top_p_by_hand():
    def kept(top_p):
        return np.isfinite(apply_top_p(LOGP, top_p)).tolist()
    assert kept(0.6) == [True, True, False, False]       # 0.5 < 0.6, 0.5 + 0.3 reaches it
    assert kept(0.9) == [True, True, True, False]
    assert kept(0.99) == [True, True, True, True]
    assert kept(0.3) == [True, False, False, False]
    assert kept(1e-9) == [True, False, False, False]     # at least one token
    assert kept(1.0) == [True] * 4
    out = apply_top_p(LOGP, 0.6)
    np.testing.assert_array_equal(out[:2], LOGP[:2])     # survivors keep their logits


def test_min_p_by_hand():
    def kept(min_p):
        return np.isfinite(apply_min_p(LOGP, min_p)).tolist()
    assert kept(0.2) == [True, True, True, False]        # threshold 0.2 * 0.5 = 0.1
    assert kept(0.5) == [True, True, False, False]       # threshold 0.25
    assert kept(0.99) == [True, False, False, False]
    assert kept(0.0) == [True] * 4


def test_softmax_and_sample_by_hand():
    np.testing.assert_allclose(softmax(LOGP), [0.5, 0.3, 0.15, 0.05], rtol=1e-6)
    assert softmax(f32(0, NEG))[1] == 0.0
    rng = np.random.default_rng(0)
    assert {sample(np.array([0.0, 0.0, 2.0, 0.0]), rng) for _ in range(50)} == {2}
    draws = [sample(np.array([1.0, 0.0, 3.0, 0.0]), rng) for _ in range(4000)]
    assert set(draws) == {0, 2} and abs(draws.count(2) / 4000 - 0.75) < 0.03


def test_two_level_sample_matches_the_distribution():
    rng = np.random.default_rng(1)
    probs = np.zeros(10_000)
    probs[[3, 4097, 9999]] = [0.2, 0.5, 0.3]             # spread over different blocks, the last one partial
    draws = np.array([sample(probs, rng, block=1024) for _ in range(6000)])
    assert set(draws.tolist()) == {3, 4097, 9999}
    np.testing.assert_allclose([np.mean(draws == i) for i in (3, 4097, 9999)], [0.2, 0.5, 0.3], atol=0.03)
    small = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert {sample(small, rng, block=2) for _ in range(200)} == {1, 5}


# ---- purity ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [
    lambda x: apply_repetition_penalty(x, np.array([0, 2, 2]), 1.3),
    lambda x: apply_temperature(x, 0.7),
    lambda x: apply_top_k(x, 2),
    lambda x: apply_top_p(x, 0.5),
    lambda x: apply_min_p(x, 0.3),
    lambda x: softmax(x),
    lambda x: make_sampler(G(repetition_penalty=1.3))(x, np.array([0, 1])),
    lambda x: make_sampler(G(temperature=0.8, top_k=3, top_p=0.9, min_p=0.1, repetition_penalty=1.3, seed=0))(
        x, np.array([0, 1])),
    lambda x: make_sampler(G(temperature=0.8, top_p=0.9, min_p=0.1, repetition_penalty=1.3, seed=0))(
        x, np.array([0, 1])),
    lambda x: make_sampler(G(temperature=1.5, min_p=0.1, seed=0))(x, np.array([], dtype=np.int64)),
])
def test_inputs_are_not_mutated(fn):
    x = f32(2.0, -1.0, 0.5, 3.0)
    before = x.copy()
    fn(x)
    np.testing.assert_array_equal(x, before)


def test_processors_return_new_arrays():
    x = f32(1, 2)
    for out in (apply_repetition_penalty(x, [], 1.2), apply_top_k(x, 0), apply_top_p(x, 1.0),
                apply_min_p(x, 0)):
        assert out is not x and not np.shares_memory(out, x)


# ---- the sampler -------------------------------------------------------------------------------------------

def test_greedy_is_argmax_after_the_penalty():
    logits = f32(3.0, 2.0, -1.0, 0.0)
    assert make_sampler(G())(logits, np.array([0])) == 0                        # no penalty: plain argmax
    assert make_sampler(G(repetition_penalty=2.0))(logits, np.array([0])) == 1  # 3/2 = 1.5 < 2
    assert make_sampler(G(repetition_penalty=2.0))(logits, np.array([], dtype=np.int64)) == 0
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.standard_normal(1000).astype(np.float32)
        # greedy ignores the filters
        assert make_sampler(G(top_k=5, top_p=0.5))(x, np.array([])) == int(np.argmax(x))


def test_greedy_takes_no_randomness():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    make_sampler(G(), rng)(f32(1, 2), np.array([]))
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("settings", [
    G(temperature=1.0, seed=42),
    G(temperature=0.7, top_k=40, seed=42),
    G(temperature=0.9, top_p=0.8, repetition_penalty=1.2, seed=42),
    G(temperature=1.3, min_p=0.05, seed=42),
])
def test_same_seed_same_ids(settings):
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((60, 3000)) * 2).astype(np.float32)
    seen = np.array([1, 5, 7])
    a = [make_sampler(settings)(row, seen) for row in rows]
    b = [make_sampler(settings)(row, seen) for row in rows]
    c = [make_sampler(settings, np.random.default_rng(42))(row, seen) for row in rows]
    other = [make_sampler(G(**{**settings.__dict__, "seed": 43}))(row, seen) for row in rows]
    assert a == b == c and a != other


def _support(settings: G, logits: np.ndarray, seen: np.ndarray) -> set[int]:
    """The ids the composed pure processors leave possible, in transformers' order."""
    x = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    x = apply_temperature(x, settings.temperature)
    x = apply_top_min(x, settings)
    return set(np.flatnonzero(np.isfinite(x)).tolist())


def apply_top_min(x: np.ndarray, s: G) -> np.ndarray:
    return apply_min_p(apply_top_p(apply_top_k(x, s.top_k), s.top_p), s.min_p)


@pytest.mark.parametrize("settings", [
    G(temperature=0.8, top_k=5, seed=0),
    G(temperature=0.8, top_p=0.7, seed=0),
    G(temperature=1.0, min_p=0.2, seed=0),
    G(temperature=0.6, top_k=8, top_p=0.9, min_p=0.1, repetition_penalty=1.5, seed=0),
    G(temperature=1.2, top_p=0.95, min_p=0.05, repetition_penalty=1.2, seed=0),
])
def test_sampler_draws_from_the_composed_processors(settings):
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal(500) * 3).astype(np.float32)
    seen = np.flatnonzero(logits > 4)[:3]
    support = _support(settings, logits, seen)
    assert 1 <= len(support) < 500
    penalised = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    probs = softmax(apply_top_min(apply_temperature(penalised, settings.temperature), settings))
    sampler = make_sampler(settings)
    draws = np.array([sampler(logits, seen) for _ in range(3000)])
    assert set(draws.tolist()) <= support
    top = int(np.argmax(probs))                          # frequencies follow the composed distribution
    assert abs(np.mean(draws == top) - probs[top]) < 0.04


def test_top_p_nucleus_wider_than_the_first_partition():
    # a flat distribution: the nucleus (900 of 1000 tokens) is far more than the first 64 candidates
    logits = np.zeros(1000, dtype=np.float32)
    assert np.isfinite(apply_top_p(logits, 0.9)).sum() == 900
    sampler = make_sampler(G(temperature=1.0, top_p=0.9, seed=1))
    draws = {sampler(logits, np.array([])) for _ in range(300)}
    assert len(draws) > 200


def _top_p_by_full_sort(logits: np.ndarray, top_p: float) -> set[int]:
    order = np.argsort(logits, kind="stable")           # ascending, as HF
    asc = np.cumsum(softmax(logits)[order])
    removed = asc <= 1 - top_p
    removed[-1] = False
    return set(order[~removed].tolist())


@pytest.mark.parametrize("vocab, scale", [(20_000, 0.1), (20_000, 1.0), (110_592, 2.0), (3_000, 5.0)])
def test_top_p_equals_a_full_sort(vocab, scale):
    # nearly flat distributions push the nucleus search past its cheap candidate sets into the partition loop
    logits = (np.random.default_rng(vocab).standard_normal(vocab) * scale).astype(np.float32)
    for top_p in (0.3, 0.9):
        want = _top_p_by_full_sort(logits, top_p)
        assert set(np.flatnonzero(np.isfinite(apply_top_p(logits, top_p))).tolist()) == want
        sampler = make_sampler(G(temperature=1.0, top_p=top_p, seed=0))
        assert {sampler(logits, np.array([])) for _ in range(50)} <= want


# ---- PenaltyState ------------------------------------------------------------------------------------------

def test_penalty_state_keeps_distinct_ids_in_first_seen_order():
    st = PenaltyState(10, [3, 1, 3, 3, 7])
    assert st.ids.tolist() == [3, 1, 7] and len(st) == 3 and 1 in st and 2 not in st
    st.add(1)
    st.add(0)
    st.update(np.array([9, 9, 0, 4]))
    st.update([])
    assert st.ids.tolist() == [3, 1, 7, 0, 9, 4]
    with pytest.raises(ValueError):
        st.ids[0] = 5                                    # a read-only view


def test_penalty_state_grows_and_matches_the_history():
    rng = np.random.default_rng(0)
    history = rng.integers(0, 5000, 3000)
    st = PenaltyState(5000, history[:100])
    for t in history[100:]:
        st.add(int(t))
    assert sorted(st.ids.tolist()) == sorted(set(history.tolist()))
    logits = rng.standard_normal(5000).astype(np.float32)
    np.testing.assert_array_equal(apply_repetition_penalty(logits, st.ids, 1.2),
                                  apply_repetition_penalty(logits, history, 1.2))


def test_penalty_state_rejects_ids_outside_the_vocabulary():
    with pytest.raises(PromptError, match="token id 10 is outside the vocabulary"):
        PenaltyState(10, [1, 10])
    with pytest.raises(PromptError, match="token id -1"):
        PenaltyState(10).add(-1)


# ---- agreement with transformers' processors ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    return torch, lp


def _random_case(seed: int, vocab: int = 2000):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(vocab) * rng.uniform(0.5, 4)).astype(np.float32)
    ids = rng.integers(0, vocab, rng.integers(1, 300))  # with repeats
    return logits, ids


def _hf_apply(hf, processor, logits, ids=None):
    torch, _ = hf
    ids = np.zeros(1, np.int64) if ids is None else ids
    out = processor(torch.from_numpy(np.asarray(ids, np.int64))[None], torch.from_numpy(logits.copy())[None])
    return out[0].numpy()


@pytest.mark.parametrize("seed", range(5))
def test_repetition_penalty_equals_transformers(hf, seed):
    _, lp = hf
    logits, ids = _random_case(seed)
    for penalty in (1.2, 0.8, 1.05):
        want = _hf_apply(hf, lp.RepetitionPenaltyLogitsProcessor(penalty), logits, ids)
        np.testing.assert_array_equal(apply_repetition_penalty(logits, ids, penalty), want)
        state_ids = PenaltyState(logits.size, ids).ids
        np.testing.assert_array_equal(apply_repetition_penalty(logits, state_ids, penalty), want)


@pytest.mark.parametrize("seed", range(5))
def test_warpers_equal_transformers(hf, seed):
    _, lp = hf
    logits, _ = _random_case(seed)
    for t in (0.3, 0.7, 1.5):
        np.testing.assert_allclose(apply_temperature(logits, t),
                                   _hf_apply(hf, lp.TemperatureLogitsWarper(t), logits), rtol=1e-6)
    for k in (1, 5, 50, 1999):
        np.testing.assert_array_equal(apply_top_k(logits, k), _hf_apply(hf, lp.TopKLogitsWarper(k), logits))
    for p in (0.05, 0.5, 0.9, 0.999):
        np.testing.assert_array_equal(apply_top_p(logits, p), _hf_apply(hf, lp.TopPLogitsWarper(p), logits))
    for m in (0.01, 0.1, 0.5):
        np.testing.assert_array_equal(apply_min_p(logits, m), _hf_apply(hf, lp.MinPLogitsWarper(m), logits))


@pytest.mark.parametrize("seed", range(5))
def test_chain_support_equals_transformers(hf, seed):
    torch, lp = hf
    logits, ids = _random_case(seed)
    s = G(temperature=0.7, top_k=60, top_p=0.9, min_p=0.05, repetition_penalty=1.3)
    chain = lp.LogitsProcessorList([lp.RepetitionPenaltyLogitsProcessor(1.3), lp.TemperatureLogitsWarper(0.7),
                                    lp.TopKLogitsWarper(60), lp.TopPLogitsWarper(0.9),
                                    lp.MinPLogitsWarper(0.05)])
    want = _hf_apply(hf, chain, logits, ids)
    assert _support(s, logits, ids) == set(np.flatnonzero(np.isfinite(want)).tolist())
    hf_probs = torch.softmax(torch.from_numpy(want), -1).numpy()
    ours = softmax(apply_top_min(apply_temperature(apply_repetition_penalty(logits, ids, 1.3), 0.7), s))
    np.testing.assert_allclose(ours, hf_probs, atol=1e-6)


def test_greedy_with_penalty_equals_transformers_argmax(hf):
    _, lp = hf
    for seed in range(10):
        logits, ids = _random_case(seed)
        want = int(np.argmax(_hf_apply(hf, lp.RepetitionPenaltyLogitsProcessor(1.2), logits, ids)))
        assert make_sampler(G(repetition_penalty=1.2))(logits, ids) == want
        assert not math.isnan(want)


# ---- per-token cost at the real vocabulary -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("settings, budget_ms", [
    (G(repetition_penalty=1.2), 1.0),
    (G(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.2, seed=0), 3.0),
    (G(temperature=0.7, top_p=0.9, min_p=0.05, repetition_penalty=1.2, seed=0), 3.0),
])
def test_sampler_cost_per_token(settings, budget_ms):
    import time
    vocab = 110_592                                      # HyperCLOVAX's
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((8, vocab)) * 2).astype(np.float32)
    rows[:, rng.integers(0, vocab, 20)] += 10           # a few likely tokens, as in a real LM
    seen = PenaltyState(vocab, rng.integers(0, vocab, 4096))
    sampler = make_sampler(settings)
    times = []
    for i in range(100):
        t = time.perf_counter()
        sampler(rows[i % 8], seen.ids)
        times.append(time.perf_counter() - t)
    assert np.median(times) * 1e3 < budget_ms
