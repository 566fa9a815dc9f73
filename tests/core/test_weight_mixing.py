"""WiSE-FT's weight-space mix: floats move along the line, counters come from the tuned model."""

from __future__ import annotations

import pytest
import torch

from nptface.core.weight_mixing import interpolate_state


def test_interpolation_mixes_float_state_towards_the_tuned_model_and_keeps_its_counters():
    start = {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(5)}
    tuned = {"w": torch.tensor([2.0, -4.0, 1.0]), "bn.num_batches_tracked": torch.tensor(9)}

    mixed = interpolate_state(start, tuned, 0.25)

    assert torch.equal(mixed["w"], torch.tensor([0.5, -1.0, 0.25]))
    assert mixed["bn.num_batches_tracked"].item() == 9
    assert torch.equal(interpolate_state(start, tuned, 1.0)["w"], tuned["w"])


def test_models_with_different_state_are_refused():
    with pytest.raises(ValueError, match="state differs in"):
        interpolate_state({"w": torch.zeros(1), "b": torch.zeros(1)}, {"w": torch.ones(1)}, 0.5)
