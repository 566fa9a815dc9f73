"""Federated progress: one plain line per phase without a bar, a bar and no lines with one."""

from __future__ import annotations

import re

from nptface.server.federation.progress import RoundProgress


def test_without_a_bar_each_phase_is_one_line_with_replies_and_elapsed_seconds():
    lines: list[str] = []
    progress = RoundProgress(5, "federated", write=lines.append)
    progress.phase(2, "fit", 0, 8)
    progress.phase(2, "fit", 7, 8)
    progress.phase(2, "spread")
    progress.round_done(2, {"seconds": 61.25, "accepted": 7, "sampled": 8, "client-domain/tar@far=1e-2": None})
    assert re.fullmatch(r"\[federated\] round 2/5 fit: 0/8 clients replied, \d+\.\d s", lines[0])
    assert lines[1].startswith("[federated] round 2/5 fit: 7/8 clients replied, ")
    assert re.fullmatch(r"\[federated\] round 2/5 spread, \d+\.\d s", lines[2])
    assert lines[3] == ("[federated] round 2/5 done in 61.2 s: 7/8 updates accepted, client-domain TAR@FAR=1e-2 n/a")


def test_with_a_bar_no_lines_are_written_and_a_resumed_run_starts_at_its_round(capsys):
    lines: list[str] = []
    progress = RoundProgress(5, "federated", bar=True, write=lines.append)
    progress.phase(3, "fit", 2, 4)
    assert progress.bar.n == 2 and "round 3/5 fit: 2/4 clients replied" in progress.bar.desc
    progress.round_done(3, {"seconds": 1.0, "accepted": 4, "sampled": 4, "client-domain/tar@far=1e-2": 0.5})
    progress.close()
    assert progress.bar.n == 3 and lines == []
