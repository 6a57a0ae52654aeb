"""`quiet_exporter()`: silence what the export's libraries print that is known to be harmless, for the CLI and
the demo (the library functions themselves change no global state).

What it silences, each seen on every export of a supported Llama with torch 2.13 / transformers 5:
- torch.onnx's registry saying torchvision is not installed (its detection ops are never traced here);
- torch's FutureWarning that `isinstance(treespec, LeafSpec)` is deprecated (raised inside torch.export);
- torch.onnx's UserWarning that an axis name "will not be used, since it shares the same shape constraints
  with another axis" (the KV inputs share `batch` / `capacity` on purpose: one graph for prefill and decode);
- the progress bars of transformers / huggingface_hub (loading weights takes well under a second; the caller
  shows its own progress with elapsed time).
Real errors and any other warning still show.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_TORCH_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _TORCH_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    bars = _progress_bars(enable=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=r".*will not be used, since it shares the same shape constraints")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if bars:
                _progress_bars(enable=True)


def _progress_bars(*, enable: bool) -> bool:
    """Switch transformers' and huggingface_hub's tqdm bars; False if neither library is installed."""
    done = False
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if enable else hf_logging.disable_progress_bar)()
        done = True
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if enable else disable_progress_bars)()
        done = True
    return done
