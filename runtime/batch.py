"""Continuous batching: generations in flight share one session; their decode steps run as one batched run.

Each generation holds a *slot*: row b of KV buffers shaped (slots, kv_heads, capacity, head_dim) per layer
(model.SharedKV). It runs the ordinary pipeline (generate.stream, with its sampler, stops and constraints) in
its own thread, with a `SlotModel` as its model: the SlotModel's prefill and decode calls go to one runner
thread, which owns every session run. The runner runs one prefill chunk at a time and gathers the pending
decode steps of all slots into one run of rows 0..n-1; a row in that range without a step of its own runs a
throwaway token written at its own length, one row past what it holds, so none of its rows is touched. The
runner waits for every decoding slot's step, at most GATHER_S after the first: a generation whose thread is
slow (a full event queue, a grammar) delays the others by that much at worst.

Prefix reuse (the prompt cache of a server): every slot remembers the ids its rows hold. A new generation
gets the free slot whose rows share the longest prefix with its prompt, or the lowest free slot with the rows
of a longer shared prefix copied from any other slot (rows below a running slot's length never change), and
prefills only the rest.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chat_template import common_prefix
from .model import PREFILL_CHUNK, KVCache, OnnxModel

GATHER_S = 0.004        # how long a decode run waits for the steps of slower slots (sampling takes ~1 ms)
MIN_COPY = 16           # a shared prefix worth copying from another slot, in tokens


@dataclass
class _Job:
    slot: int
    ids: np.ndarray | None = None      # a prefill chunk, or None for a decode step
    token: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class Lease:
    """One slot held by one generation: its cache (a view of the shared buffers) and the ids its first
    `reused` rows already hold."""

    slot: int
    cache: KVCache
    reused: int
    model: "SlotModel"


class BatchRunner:
    """The slots, the prefix records and the runner thread of one OnnxModel. Thread-safe; close() stops it."""

    def __init__(self, model: OnnxModel, *, slots: int, capacity: int):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.kv = model.new_shared_cache(slots, capacity)
        self.capacity = self.kv.capacity - 1        # the last row is kept free for throwaway steps
        for cache in self.kv.caches:
            cache.capacity = self.capacity
        self._held: list[list[int]] = [[] for _ in range(slots)]   # ids in each slot's rows
        self._busy = [False] * slots
        self._decoding: set[int] = set()            # slots past their prompt: the runner waits for them
        self._prefills: deque[_Job] = deque()
        self._decodes: dict[int, _Job] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.steps = self.rows = 0                  # decode runs and the rows they carried (stats)
        # each slot's logits, copied out of the run's buffer (the next run overwrites it while this slot's
        # thread samples; the slot's own row is written again only after it submits its next step)
        self._out = np.zeros((slots, model.config.vocab_size), np.float32)
        self._thread = threading.Thread(target=self._loop, name="clova-edge-batch", daemon=True)
        self._thread.start()

    # -- slots -----------------------------------------------------------------------------------------------
    def free_slots(self) -> int:
        with self._cond:
            return self._busy.count(False)

    def acquire(self, ids: list[int]) -> Lease | None:
        """A free slot for a prompt of `ids`, its longest reusable prefix already in its rows; None if every
        slot is busy. At least the last prompt id is left to prefill (its logits start the answer)."""
        with self._cond:
            free = [b for b, busy in enumerate(self._busy) if not busy]
            if not free:
                return None
            limit = len(ids) - 1
            own = {b: min(limit, common_prefix(self._held[b], ids)) for b in free}
            slot = max(free, key=lambda b: (own[b], -b))
            src, shared = max(((b, min(limit, common_prefix(h, ids))) for b, h in enumerate(self._held)),
                              key=lambda t: t[1])
            if shared >= own[slot] + MIN_COPY:
                slot = free[0]
                if src != slot:       # the runner is idle or between runs: it holds the lock while it runs
                    for a in self.kv.arrays:
                        a[slot, :, :shared] = a[src, :, :shared]
                reused = shared
            else:
                reused = own[slot]
            self._busy[slot] = True
            self._held[slot] = list(ids[:reused])
            cache = self.kv.caches[slot]
            cache.length = reused
            return Lease(slot, cache, reused, SlotModel(self, slot))

    def release(self, lease: Lease, held: list[int]) -> None:
        """Give the slot back; `held` are the ids in its rows (prompt + answer fed back), kept for reuse."""
        with self._cond:
            n = min(lease.cache.length, len(held))
            self._held[lease.slot] = list(held[:n])
            lease.cache.length = n
            self._busy[lease.slot] = False
            self._decoding.discard(lease.slot)   # called by the slot's own thread: no step of it is pending
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    # -- jobs ------------------------------------------------------------------------------------------------
    def submit(self, job: _Job) -> Any:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch runner is closed")
            if job.ids is None:
                self._decodes[job.slot] = job
                self._decoding.add(job.slot)
            else:
                self._prefills.append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._prefills or self._decodes):
                    self._cond.wait()
                if self._closed:
                    for job in [*self._prefills, *self._decodes.values()]:
                        job.error = RuntimeError("the batch runner is closed")
                        job.done.set()
                    return
                if self._decodes:
                    deadline = time.monotonic() + GATHER_S
                    while (not self._decoding.issubset(self._decodes) and not self._closed
                           and (left := deadline - time.monotonic()) > 0):
                        self._cond.wait(left)
                    jobs, self._decodes = list(self._decodes.values()), {}
                    self._run(jobs, self._decode)
                if self._prefills:
                    self._run([self._prefills.popleft()], self._prefill)

    def _run(self, jobs: list[_Job], run) -> None:
        """Run jobs under the lock (so acquire never copies rows during a run); errors go to the jobs."""
        try:
            results = run(jobs)
            for job, result in zip(jobs, results):
                job.result = result
        except BaseException as e:  # the callers' threads re-raise it
            for job in jobs:
                job.error = e
        for job in jobs:
            job.done.set()

    def _prefill(self, jobs: list[_Job]) -> list[np.ndarray]:
        job = jobs[0]
        rows = np.array([len(job.ids) - 1], np.int64)
        np.copyto(self._out[job.slot], self.model.run_chunk(self.kv.caches[job.slot], job.ids, rows)[-1])
        return [self._out[job.slot]]

    def _decode(self, jobs: list[_Job]) -> list[np.ndarray]:
        n = max(j.slot for j in jobs) + 1
        caches = self.kv.caches[:n]
        positions = np.array([min(c.length, self.capacity) for c in caches], np.int32)
        tokens = np.zeros(n, np.int64)
        for j in jobs:
            tokens[j.slot] = j.token
        logits = self.model.decode_batch(self.kv, tokens, positions)
        self.steps, self.rows = self.steps + 1, self.rows + len(jobs)
        for j in jobs:
            caches[j.slot].length += 1
        for j in jobs:
            np.copyto(self._out[j.slot], logits[j.slot])
        return [self._out[j.slot] for j in jobs]


class SlotModel:
    """What generate.py sees as the model of one slot: prefill and decode, run by the BatchRunner."""

    def __init__(self, runner: BatchRunner, slot: int):
        self.runner, self.slot = runner, slot
        self.config = runner.model.config

    def prefill(self, cache: KVCache, ids: np.ndarray, *, all_logits: bool = False) -> np.ndarray:
        if all_logits:
            raise ValueError("a batched slot returns the last position's logits only")
        logits = None
        for i in range(0, len(ids), PREFILL_CHUNK):   # chunk by chunk: decode runs go between them
            logits = self.runner.submit(_Job(self.slot, ids=np.asarray(ids[i:i + PREFILL_CHUNK], np.int64)))
        return logits

    def decode(self, cache: KVCache, token: int) -> np.ndarray:
        return self.runner.submit(_Job(self.slot, token=int(token)))
