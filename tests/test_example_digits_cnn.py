"""examples/digits_cnn.py in its fast mode (as CI runs it): the CNN with
BatchNorm learns the 8x8 digits, reports a test accuracy well above chance,
prints progress each epoch and saves its learning curve."""

import numpy as np
from _example_runner import run_example


def test_fast_mode_learns_the_digits_and_saves_the_learning_curve(tmp_path):
    result, stdout = run_example(
        "digits_cnn", "--fast", "--plot", "curve.png", cwd=tmp_path
    )
    # The fast run (3 epochs) already passes 93% on the 360 held-out images
    # (the full run reaches >= 95%, see docs/examples/digits_cnn.md).
    assert result["epochs"] == 3 and result["n_test"] == 360
    assert result["test_accuracy"] >= 0.93, result
    assert len(result["test_accuracies"]) == 3
    assert np.isfinite(result["first_loss"]) and result["first_loss"] > 1.0
    assert stdout.count("epoch ") >= 3  # a progress line per epoch
    png = (tmp_path / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
