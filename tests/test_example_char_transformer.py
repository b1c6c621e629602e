"""examples/char_transformer.py in its fast mode (as CI runs it): the tiny
character transformer (nn.Stacked blocks, rotary embeddings, causal
attention) learns from the text that ships with Python, beats the best guess
that ignores context, and samples text of the requested length."""

from _example_runner import run_example


def test_fast_mode_learns_more_than_character_frequencies_and_samples(tmp_path):
    result, stdout = run_example(
        "char_transformer", "--fast", "--plot", "loss.png", cwd=tmp_path
    )
    assert result["vocab_size"] > 80  # the characters of the pydoc topics
    assert result["config"]["layers"] == 2 and result["config"]["steps"] == 150
    # From a near-uniform start (log 103 = 4.6 nats) to below the entropy of
    # the character frequencies (about 3.2 nats): it uses the context.
    assert result["first_loss"] > 4.0
    assert result["val_loss"] < result["unigram_entropy"] - 0.5, result
    assert len(result["val_losses"]) == 15  # progress every tenth of the run
    assert stdout.count("validation loss") >= 15
    # The sample: 120 new characters, each one of the text's characters.
    assert len(result["sample"]) == 120
    assert len(result["prompt"]) == result["config"]["seq_len"]
    assert result["sample"] in stdout
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
