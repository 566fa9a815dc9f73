"""What the federated server is doing now: the round, its phase, how many clients answered, how long.

A round can take minutes — clients train, the server evaluates the candidate backbone, the bank
takes the clients' rows and is spread out, clients verify their held-out images — and a run that
prints nothing meanwhile looks hung. The round loop reports each phase here (``register``,
``fit``, ``evaluate``, ``spread``, ``client-evaluate``; replies over expected when clients are
asked). Like the trainer, it draws a progress bar (tqdm) when asked for one, which callers do
only when stdout is a terminal, and otherwise writes one plain line per step on stdout, so a
run under nohup, CI or ``flwr log --stream`` shows it is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def _print(line: str) -> None:
    print(line, flush=True)


class RoundProgress:
    """Per-round progress of one federated run, as a bar or as plain lines (``write``)."""

    def __init__(
        self, num_rounds: int, label: str = "fed", bar: bool = False, write: Callable[[str], None] = _print
    ) -> None:
        self.num_rounds = num_rounds
        self.label = label
        self.write = write
        self.bar = tqdm(total=num_rounds, unit="round", desc=label, dynamic_ncols=True) if bar else None
        self.round = -1
        self.started = time.monotonic()

    def phase(self, round_number: int, name: str, replied: int | None = None, expected: int | None = None) -> None:
        """Round ``round_number`` is in phase ``name``; ``replied`` of ``expected`` clients have answered."""
        if round_number != self.round:
            self.round, self.started = round_number, time.monotonic()
            if self.bar is not None and self.bar.n < round_number - 1:  # a resumed run
                self.bar.update(round_number - 1 - self.bar.n)
        clients = "" if expected is None else f": {replied or 0}/{expected} clients replied"
        status = f"round {round_number}/{self.num_rounds} {name}{clients}"
        elapsed = f"{time.monotonic() - self.started:.1f} s"
        if self.bar is not None:
            self.bar.set_description(f"{self.label} {status}")
            self.bar.set_postfix_str(elapsed)
        else:
            self.write(f"[{self.label}] {status}, {elapsed}")

    def round_done(self, round_number: int, record: dict[str, Any]) -> None:
        """The round is checkpointed: its headline numbers."""
        tar = record.get("client-domain/tar@far=1e-2")
        summary = (
            f"round {round_number}/{self.num_rounds} done in {record.get('seconds', 0.0):.1f} s: "
            f"{record.get('accepted', 0)}/{record.get('sampled', 0)} updates accepted, client-domain TAR@FAR=1e-2 "
            + ("n/a" if tar is None else f"{tar * 100:.2f}%")
        )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(summary)
        else:
            self.write(f"[{self.label}] {summary}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
