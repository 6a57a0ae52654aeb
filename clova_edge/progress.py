"""Progress of long steps (export, quantize, bench) on stderr, as the `progress` callback they take.

Every message is a step ("trace: ONNX ...") except counted ones, "[i/n] detail" (the quantizer's per-layer
lines), which become one bar with an ETA. On a terminal the current step is one line rewritten in place with
its elapsed time; elsewhere (a log, CI) steps are plain lines and a bar is printed sparsely (at 25 % steps).
Only the CLI and the demo use it: library code reports through `progress` and prints nothing itself.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from typing import TextIO

_COUNTED = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$", re.S)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s // 60:.0f} min {s % 60:02.0f} s"


class StepProgress:
    """Callable progress reporter; use it as a context manager, so the last line is finished and the ticker
    stops."""

    def __init__(self, out: TextIO | None = None, *, tty: bool | None = None, tick_s: float = 0.5):
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.step: str | None = None          # the step shown on the live line
        self.detail = ""                      # a counted step's current item
        self.t_step = time.monotonic()
        self.count: tuple[int, int, float, int] | None = None   # (done, total, start, done at start)
        self._printed_quarter = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        if self.tty:
            self._ticker = threading.Thread(target=self._tick, args=(tick_s,), daemon=True)
            self._ticker.start()

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, message: str) -> None:
        m = _COUNTED.match(message)
        with self._lock:
            if m:
                self._counted(int(m[1]), int(m[2]), m[3])
            else:
                self._new_step(message)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._finish_line()

    # -- internals (called with the lock held) --
    def _status(self) -> str:
        now = time.monotonic()
        if self.count is None:
            return f"{self.step}  ({_duration(now - self.t_step)})"
        done, total, start, first = self.count
        elapsed = now - start   # since the first count: what came before (calibration...) is not the rate
        width = 24
        bar = "#" * (width * done // max(total, 1))
        eta = f", ETA {_duration(elapsed / (done - first) * (total - done))}" if first < done < total else ""
        return f"  [{bar:<{width}}] {done}/{total}  {_duration(now - self.t_step)}{eta}  {self.detail}"

    def _draw(self) -> None:
        cols = shutil.get_terminal_size((100, 20)).columns
        self.out.write("\r" + self._status()[: cols - 1] + "\x1b[K")
        self.out.flush()

    def _finish_line(self) -> None:
        if self.step is None:
            return
        if self.tty:
            self._draw()
            self.out.write("\n")
            self.out.flush()
        elif self.count is not None and self.count[0] < self.count[1]:
            self.out.write(f"{self._status()}\n")   # a counted step left unfinished: say where it stopped
        self.step, self.count = None, None

    def _new_step(self, message: str) -> None:
        self._finish_line()
        if "\n" in message:          # a table or other block: print as it is, nothing to tick
            self.out.write(message + "\n")
            self.out.flush()
            return
        self.step, self.t_step, self.count = message, time.monotonic(), None
        if self.tty:
            self._draw()
        else:
            self.out.write(message + "\n")
            self.out.flush()

    def _counted(self, done: int, total: int, detail: str) -> None:
        if self.count is None or done < self.count[0]:   # a new count: the step before it is over
            self._finish_line()
            self.step, self.t_step = "", time.monotonic()
            self.count, self._printed_quarter = (done, total, self.t_step, done), -1
        self.count, self.detail = (done, total, *self.count[2:]), detail
        if self.tty:
            self._draw()
            return
        quarter = 4 * done // max(total, 1)
        if quarter > self._printed_quarter:
            self._printed_quarter = quarter
            self.out.write(f"{self._status()}\n")
            self.out.flush()
        if done >= total:
            self.count = None
            self.step = None

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self.step is not None:
                    self._draw()
