"""examples/checkpoint_resume.py: a run that crashes and resumes from its last
checkpoint ends bit-identical to one that never stopped (model, optimiser
state, step and PRNG key), both with the in-process demonstration (fast mode,
as CI runs it) and with a process killed by SIGKILL for real."""

import signal
import subprocess
import sys

from _example_runner import EXAMPLES, run_example


def test_fast_demonstration_resumes_bit_identical(tmp_path):
    result, stdout = run_example(
        "checkpoint_resume", "--fast", "--plot", "curves.png", cwd=tmp_path
    )
    # 60 steps, a checkpoint every 10; the crash after step 32 loses steps 31
    # and 32, which the resumed run does again from the checkpoint of step 30.
    assert (result["steps"], result["crash_at"], result["resumed_from"]) == (60, 32, 30)
    assert result["model_equal"] and result["opt_state_equal"]
    assert result["key_equal"] and result["step_equal"]
    assert result["losses_equal"]
    assert result["digest_straight"] == result["digest_resumed"]
    assert result["final_loss"] < 0.5 * result["first_loss"]  # it trains
    assert "resuming from the checkpoint at step 30" in stdout
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_killed_process_resumes_to_the_state_of_an_uninterrupted_one(tmp_path):
    script = str(EXAMPLES / "checkpoint_resume.py")
    args = ["--train", "--steps", "40", "--json"]
    # SIGKILL after step 25; the fast mode saves every 10 steps, so the last
    # checkpoint is that of step 20.
    killed = subprocess.run(
        [sys.executable, script, *args, "--fast", "--run-dir", "b", "--kill-at", "25"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "killing this process after step 25" in killed.stdout
    resumed, stdout = run_example(
        "checkpoint_resume", *args[:-1], "--fast", "--run-dir", "b", cwd=tmp_path
    )
    assert "resuming from the checkpoint at step 20" in stdout
    assert resumed["resumed_from"] == 20 and resumed["steps"] == 40
    straight, _ = run_example(
        "checkpoint_resume", *args[:-1], "--fast", "--run-dir", "a", cwd=tmp_path
    )
    assert straight["resumed_from"] == 0
    assert resumed["digest"] == straight["digest"]
    assert resumed["final_loss"] == straight["final_loss"]
