"""examples/many_processes.py: it starts 2 JAX processes of 4 CPU devices
on localhost, which train tensor parallel across the processes, save one
checkpoint together, restore it data parallel and train on, with the losses
of the same training on one process."""

import json
import pathlib
import subprocess
import sys

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_two_processes_train_save_restore_like_one(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "many_processes.py"),
            "--json",
            "--folder",
            str(tmp_path),
            "--timeout",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=300,  # the example kills its processes at 240 s
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["process"] for r in results] == [0, 1]
    for result in results:
        np.testing.assert_allclose(
            result["losses"], result["single_process"], rtol=2e-5, atol=1e-6
        )
        assert result["losses"][-1] < result["losses"][0]  # it learns
        assert result["restored_mesh"] == {"data": 8, "model": 1}
    assert (tmp_path / "checkpoint" / "header.json").is_file()
