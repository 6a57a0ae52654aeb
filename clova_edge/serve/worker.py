"""Admission and generation threads: how the server's requests share one loaded model.

A request is admitted when one of `slots` is free, waits in a bounded queue when none is, and is refused
(Busy: 503 with Retry-After) when the queue is full too. An admitted request's generation runs in its own
thread on a slot of the BatchRunner (runtime/batch.py), which batches the decode steps of every running
generation into one session run and reuses the KV rows of a prompt prefix any slot already holds. The thread
pushes the generation's Events into the request's asyncio queue (so a slow client never slows the batch);
a request whose client went away sets `cancel`, and its thread stops at the next token and frees the slot.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from clova_edge.runtime.batch import BatchRunner
from clova_edge.runtime.conversation import TurnReader
from clova_edge.runtime.settings import GenerationSettings

_END = object()


class Busy(Exception):
    """Every slot is busy and the queue is full."""

    def __init__(self, retry_after: int):
        super().__init__("the server is busy: every slot is generating and the queue is full; retry later")
        self.retry_after = retry_after


@dataclass
class Work:
    """One generation: prompt ids and how to answer. `reused` is set when it starts (prompt ids whose KV rows
    were already in the slot: OpenAI's usage.prompt_tokens_details.cached_tokens)."""

    ids: list[int]
    settings: GenerationSettings
    tools: bool = False
    constraint: Any = None
    ignore_eos: bool = False
    reused: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """The slots of one Engine. Use from one asyncio loop; `close()` at shutdown."""

    def __init__(self, engine: Any, *, slots: int, capacity: int, queue: int):
        self.engine = engine
        self.runner = BatchRunner(engine.model, slots=slots, capacity=capacity)
        self.slots, self.queue = slots, queue
        self.capacity = self.runner.capacity          # positions per slot (prompt + answer)
        self.waiting = self.running = 0
        self._free: asyncio.Semaphore | None = None   # made in the serving loop

    def close(self) -> None:
        self.runner.close()

    async def stream(self, work: Work) -> AsyncIterator[Any]:
        """The Events of one generation, once admitted. Raises Busy if it cannot even queue."""
        if self._free is None:
            self._free = asyncio.Semaphore(self.slots)
        if self.running + self.waiting >= self.slots + self.queue:
            raise Busy(retry_after=1 + self.waiting // self.slots)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        threading.Thread(target=self._generate, args=(work, loop, events), daemon=True,
                         name="clova-edge-request").start()
        try:
            while (item := await events.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            work.cancel.set()        # a no-op when it ended; stops the thread when the client went away

    def _generate(self, work: Work, loop: asyncio.AbstractEventLoop, events: asyncio.Queue) -> None:
        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:     # the loop is closed: the server is shutting down
                pass

        lease = self.runner.acquire(work.ids)   # the semaphore counts free slots: there is one
        answer: list[int] = []
        stream = None
        try:
            if lease is None:
                raise RuntimeError("no free slot although the admission counted one")
            work.reused = lease.reused
            stream = self.engine.stream_ids(work.ids[lease.reused:], work.settings, cache=lease.cache,
                                            history=work.ids[:lease.reused], tools=work.tools,
                                            constraint=work.constraint, model=lease.model,
                                            ignore_eos=work.ignore_eos)
            if work.tools:
                stream = TurnReader(self.engine.format).wrap(stream)
            for event in stream:
                if event.token_id is not None:
                    answer.append(event.token_id)
                put(event)
                if work.cancel.is_set():
                    break
        except BaseException as e:  # the request's handler re-raises it (bad input becomes a 400 there)
            put(e)
        finally:
            if stream is not None:
                stream.close()
            if lease is not None:
                self.runner.release(lease, work.ids + answer)
            try:
                loop.call_soon_threadsafe(self._finished)
            except RuntimeError:
                pass
            put(_END)

    def _finished(self) -> None:
        self.running -= 1
        self._free.release()
