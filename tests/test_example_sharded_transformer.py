"""examples/sharded_transformer.py: trained data- and model-parallel on 8 CPU
devices, it gives the loss curve of the same training on one device, and its
checkpoint restores straight into the sharded layout."""

import json
import pathlib
import subprocess

import numpy as np
from _helpers import run_on_cpu_devices

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_sharded_training_matches_one_device_and_restores_sharded(tmp_path):
    plot = tmp_path / "loss.png"
    argv = ["x", "--json", "--fast", "--plot", str(plot)]
    script = (
        f"import sys, runpy; sys.argv = {argv!r}; "
        f"runpy.run_path({str(EXAMPLE / 'sharded_transformer.py')!r}, "
        "run_name='__main__')"
    )
    try:
        done = run_on_cpu_devices(script, 8, timeout=300)
    except subprocess.TimeoutExpired as error:  # pragma: no cover
        raise AssertionError("the example took over 300 s") from error
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["sharded"], out["single"], rtol=1e-5)
    assert out["sharded"][-1] < out["sharded"][0]  # it learns
    assert out["restored_equal"] is True
    assert out["restored_up_sharding"] == "P(None, 'model')"
    # (layers, mlp, embed) = (2, 32, 16), mlp split four ways over "model".
    assert out["up_shard_shape"] == [2, 8, 16]
    assert len(out["sharded"]) == 3  # --fast: 3 steps
    assert plot.read_bytes().startswith(b"\x89PNG")
