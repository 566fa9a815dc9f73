"""Silencing the converters' chatter so that our tables and errors stay readable.

torch.onnx, onnxruntime's quantizer, litert-torch (with absl/TensorFlow C++ logging), torchao,
ai-edge-quantizer and coremltools report progress through Python's stdout/stderr, logging, and
C++ writes straight to file descriptors 1 and 2. All of it is kept out of the user's terminal
for the duration of a conversion; errors still propagate as exceptions, and ``nptface -v``
shows our own progress log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

CHATTY_LOGGERS = ("coremltools", "onnxscript", "torch.onnx", "torchao", "absl", "onnx_ir", "root")


def _logger(name: str) -> logging.Logger:
    return logging.getLogger(None if name == "root" else name)


@contextlib.contextmanager
def _descriptors_silenced() -> Iterator[None]:
    """Point fds 1 and 2 at a scratch file (C++ logging bypasses sys.stdout/sys.stderr)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    saved = {name: _logger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:
        _logger(name).setLevel(logging.ERROR)
    try:
        with (
            _descriptors_silenced(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            yield
    finally:
        for name, level in saved.items():
            _logger(name).setLevel(level)
