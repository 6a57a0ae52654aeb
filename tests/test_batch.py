"""Batched decode (runtime/batch.py): generations that run at once, their steps batched in one session run,
give exactly the ids they give alone; prefixes held by any slot are reused; slots are freed and refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from clova_edge.runtime.batch import BatchRunner
from clova_edge.runtime.engine import Engine


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, variant="fp32", threads=1)


def _alone(engine, ids, n):
    cache = engine.model.new_cache(len(ids) + n)
    settings = engine.default_settings(max_new_tokens=n, temperature=0.0)
    return [e.token_id for e in engine.stream_ids(ids, settings, cache=cache, ignore_eos=True)
            if e.token_id is not None]


def _in_slot(engine, runner, ids, n, out, key):
    lease = runner.acquire(ids)
    settings = engine.default_settings(max_new_tokens=n, temperature=0.0)
    events = engine.stream_ids(ids[lease.reused:], settings, cache=lease.cache, history=ids[:lease.reused],
                               model=lease.model, ignore_eos=True)
    got = [e.token_id for e in events if e.token_id is not None]
    out[key] = (got, lease.reused)
    runner.release(lease, ids + got)


def test_concurrent_generations_equal_their_solo_runs(engine):
    rng = np.random.default_rng(1)
    prompts = [list(map(int, rng.integers(5, 900, n))) for n in (7, 40, 3, 90)]
    solo = [_alone(engine, p, 24) for p in prompts]
    runner = BatchRunner(engine.model, slots=4, capacity=256)
    try:
        out: dict = {}
        threads = [threading.Thread(target=_in_slot, args=(engine, runner, p, 24, out, i))
                   for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [out[i][0] for i in range(4)] == solo
        assert runner.rows > runner.steps      # some runs carried several generations' steps
    finally:
        runner.close()


def test_a_shared_prefix_is_reused_from_any_slot_and_answers_do_not_change(engine):
    rng = np.random.default_rng(2)
    system = list(map(int, rng.integers(5, 900, 60)))
    a, b = system + [11, 12, 13], system + [21, 22]
    runner = BatchRunner(engine.model, slots=2, capacity=256)
    try:
        out: dict = {}
        _in_slot(engine, runner, a, 8, out, "a")
        assert out["a"][1] == 0
        hold = runner.acquire(a + out["a"][0])     # slot 0 now busy: b must copy the prefix into slot 1
        assert hold.reused == len(a) + 7 and hold.slot == 0
        _in_slot(engine, runner, b, 8, out, "b")
        assert out["b"][1] == len(system)
        assert out["b"][0] == _alone(engine, b, 8)
        assert runner.acquire(b) is not None and runner.acquire(b) is None   # both busy: refused
    finally:
        runner.close()


def test_a_full_slot_stops_at_its_capacity(engine):
    runner = BatchRunner(engine.model, slots=1, capacity=256)
    try:
        out: dict = {}
        ids = list(range(5, 5 + 250))
        _in_slot(engine, runner, ids, 100, out, 0)
        assert len(out[0][0]) == runner.capacity - len(ids) + 1   # the last id is sampled, never fed back
    finally:
        runner.close()
