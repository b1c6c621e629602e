"""Run a script of `examples/` as a user would, in a new Python process, and
read back the results it printed as its last line of JSON (`--json`)."""

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(
    name: str, *args: str, cwd: pathlib.Path, timeout: float = 240
) -> tuple[dict[str, Any], str]:
    """Run `examples/<name>.py --json *args` in `cwd` (where the plot goes)
    and return `(results, stdout)`; fail with the script's stderr if it
    fails or prints no JSON result."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / f"{name}.py"), "--json", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:  # pragma: no cover
        raise AssertionError(f"examples/{name}.py took over {timeout} s") from error
    assert done.returncode == 0, f"examples/{name}.py failed:\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), (
        f"examples/{name}.py printed no JSON result:\n{done.stdout}\n{done.stderr}"
    )
    return json.loads(lines[-1]), done.stdout
