"""examples/fine_tuning.py in its fast mode (as CI runs it): a pretrained
backbone fine-tuned four ways (frozen, policies with bfloat16 compute, LoRA,
from scratch), each learning the new task, the frozen backbone untouched and
the merged LoRA model predicting as the adapted one."""

from _example_runner import run_example


def test_fast_mode_fine_tunes_four_ways(tmp_path):
    result, stdout = run_example(
        "fine_tuning", "--fast", "--plot", "curves.png", cwd=tmp_path
    )
    accuracy = result["accuracy"]
    assert set(accuracy) == {
        "frozen backbone",
        "policies (bf16)",
        "LoRA",
        "from scratch",
    }
    # Two images per digit, a two-class task: every way learns it well above
    # chance (50%); with pretraining the frozen backbone beats a random start.
    assert all(a > 0.7 for a in accuracy.values()), accuracy
    assert accuracy["frozen backbone"] > accuracy["from scratch"], accuracy
    assert result["merged_same"] is True
    assert result["shots"] == 2 and result["n_test"] > 600
    for curve in result["curves"].values():
        assert len(curve) == result["steps"] // result["every"] + 1
    assert stdout.count("frozen backbone: step") >= 4  # progress lines
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
