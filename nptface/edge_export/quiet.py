"""Silencing the converters' chatter so that our tables and errors stay readable.

torch.onnx, onnxruntime's quantizer, litert-torch, ai-edge-quantizer and coremltools all report
progress through stdout, stderr or logging. Their output is kept out of the user's terminal
(errors still propagate as exceptions); ``nptface -v`` shows our own progress log.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

CHATTY_LOGGERS = ("coremltools", "onnxscript", "torch.onnx", "root", "absl", "onnx_ir")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    saved = {name: logging.getLogger(name if name != "root" else None).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        logging.getLogger(name if name != "root" else None).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name if name != "root" else None).setLevel(level)
