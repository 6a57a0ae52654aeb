"""The keyboard while the chat streams an answer: Ctrl-D must not vanish, and typed-ahead text must not be
lost.

In a terminal's normal (canonical) mode, Ctrl-D pressed while nobody reads stdin is swallowed: by the time
readline reads again it has become nothing. `AnswerKeys` switches the terminal to cbreak mode for the answer
(no echo, no line buffering; Ctrl-C still raises KeyboardInterrupt), reads what arrives between tokens, and
reports Ctrl-D; other printable keys are put back as the next prompt's text (readline's startup hook) where
readline is loaded. Outside a terminal (a pipe) it does nothing.
"""

from __future__ import annotations

import os
import select
import sys

try:
    import termios
except ImportError:   # not a POSIX system: no cbreak mode, Ctrl-D during an answer is left to the terminal
    termios = None

EOF_KEY = "\x04"


class AnswerKeys:
    def __init__(self, stream=None):
        stream = stream or sys.stdin
        self.fd = stream.fileno() if termios is not None and stream.isatty() else None
        self.eof = False
        self.typed = ""
        self._saved = None

    def __enter__(self) -> "AnswerKeys":
        if self.fd is not None:
            self._saved = termios.tcgetattr(self.fd)
            mode = termios.tcgetattr(self.fd)
            # lflags: keys arrive at once and unechoed; ISIG stays, so Ctrl-C is still a signal
            mode[3] &= ~(termios.ICANON | termios.ECHO)
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 0, 0
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            self.poll()
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
            self._saved = None
        self._give_back()

    def poll(self) -> bool:
        """Read the keys pressed so far (never blocks); True once Ctrl-D was pressed."""
        while self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1024)
            if not data:
                break
            for ch in data.decode("utf-8", errors="ignore"):
                if ch == EOF_KEY:
                    self.eof = True
                elif ch.isprintable():
                    self.typed += ch
                elif ch in "\x7f\b":
                    self.typed = self.typed[:-1]
        return self.eof

    def _give_back(self) -> None:
        readline = sys.modules.get("readline")
        if not self.typed or self.eof or readline is None:
            return
        text = self.typed

        def hook() -> None:
            readline.insert_text(text)
            readline.set_startup_hook(None)
        readline.set_startup_hook(hook)
