"""Checkpoints on JAX's multi-controller runtime, with real processes on
localhost (`jax.distributed.initialize`, gloo collectives, CPU devices).

One sequence, each job started by `_run_job` with a hard deadline and every
process killed at the end: 4 devices in 1 process train and save, and 8
devices in 2 processes restore that and continue; they also train tensor
parallel across the processes, save, restore data parallel and continue; the
same
checkpoint restores on 4 devices in 1 process, which saves again; that one
restores on 8 devices in 4 processes (both mesh axes across processes).
Every loss equals the uninterrupted single-process training's. A process
killed mid-save (one writing its shards; process 0 just before it commits)
leaves the previous checkpoint loadable. Bytes read per process by a restore
of a fully sharded model are about 1/N of its data.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import pytreemod as ptm

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _many_processes_worker as worker  # noqa: E402

WORKER = pathlib.Path(worker.__file__)
# Generous: two shared cores, and four JAX processes compiling at once.
DEADLINE_S = 240


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_job(
    scenario: str, processes: int, devices: int, work: pathlib.Path, killed: int = -1
) -> list[dict]:
    """Run `scenario` as `processes` JAX processes of `devices` CPU devices
    each, and return each process's results. With `killed`, that process is
    expected to kill itself mid-save; the others (left waiting at a barrier)
    are then killed here. Every process is killed at the deadline, and at the
    end whatever happened."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    port = str(_free_port())
    logs = [open(work / f"log-{scenario}-{i}.txt", "w") for i in range(processes)]  # noqa: SIM115
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                scenario,
                str(i),
                str(processes),
                port,
                str(work),
            ],
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]
    try:
        while time.monotonic() - started < DEADLINE_S:
            codes = [p.poll() for p in procs]
            if killed >= 0 and codes[killed] is not None:
                break
            if killed < 0 and all(c is not None for c in codes):
                break
            if any(c not in (None, 0) for i, c in enumerate(codes) if i != killed):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    elapsed = time.monotonic() - started
    print(f"job `{scenario}`: {processes} processes, {elapsed:.1f} s")

    def log(i: int) -> str:
        return (work / f"log-{scenario}-{i}.txt").read_text()[-3000:]

    for i, p in enumerate(procs):
        if i == killed:
            assert p.returncode == -9, f"process {i} was not killed:\n{log(i)}"
        elif killed < 0:
            assert p.returncode == 0, (
                f"process {i} of `{scenario}` failed after {elapsed:.0f} s "
                f"(rc {p.returncode}):\n{log(i)}"
            )
    results = []
    for i in range(processes):
        found = work / f"result-{i}.json"
        assert found.exists(), f"process {i} wrote no results:\n{log(i)}"
        results.append(json.loads(found.read_text()))
        found.unlink()
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted training on one process and one device."""
    state, losses = worker.train(worker.start(), None, 0, 6)
    state_2, _ = worker.train(worker.start(), None, 0, 2)
    work = tmp_path_factory.mktemp("many")
    ptm.save(work / "single.ckpt", state_2, metadata={"step": 2})
    return {
        "losses": losses,
        "state_2": state_2,
        "sums_2": worker.sums(state_2),
        "work": work,
    }


def _losses(reference: dict, first: int, last: int) -> list[float]:
    return reference["losses"][first:last]


def _same_sums(got: list[float], want: list[float]) -> None:
    # Sums of sharded arrays are reduced in another order on another layout.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _assert_same(got: list[float], want: list[float]) -> None:
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_save_restore_continue_across_layouts_and_process_counts(reference):
    work = reference["work"]
    ckpt = work / "ckpt"

    # 4 devices in 1 process train and save a folder...
    (first,) = _run_job("first", 1, 4, work)
    _assert_same(first["trained"], _losses(reference, 0, 2))

    # ... which 8 devices in 2 processes restore. These train again from the
    # start, save, restore onto another layout. Process 1 is killed in its
    # last save.
    two = _run_job("two", 2, 4, work, killed=1)
    for out in two:
        _same_sums(out["sums_from_one"], first["sums_at_2"])
        _assert_same(out["continued_from_one"], _losses(reference, 2, 4))
        _assert_same(out["trained"], _losses(reference, 0, 2))
        _assert_same(out["continued"], _losses(reference, 2, 4))
        _assert_same(out["continued_from_file"], _losses(reference, 2, 4))
        assert out["restored_mesh"] == {"data": 8, "model": 1}
        assert out["shard_replicated"] is True
        assert out["bytes"]["values_ok"] is True
        ratio = out["bytes"]["bytes_read"] / out["bytes"]["data_bytes"]
        print(f"2 processes: {out['bytes']} ({ratio:.3f} of the data)")
        assert 0.48 < ratio < 0.53, out["bytes"]
        assert out["saving_killed"] is True and "unexpected" not in out
        assert "is a single-file checkpoint" in out["save_over_file"]
    assert ptm.load_metadata(work / "single.ckpt") == {"step": 2}
    # The killed save left the checkpoint of step 2, whole.
    assert ptm.load_metadata(ckpt) == {"step": 2}
    loaded = ptm.load(ckpt, worker.start())
    _same_sums(worker.sums(loaded), reference["sums_2"])
    assert ptm.tree_equal(loaded, reference["state_2"], rtol=1e-5, atol=1e-6), (
        "the restored values differ from the training's"
    )

    # Each distinct shard was written once, and the work was split.
    header = json.loads((ckpt / "header.json").read_text())
    assert header["processes"] == 2
    by_path = {leaf["path"]: leaf["shards"] for leaf in header["leaves"]}
    up = by_path["[0].up.weight"]  # (32, 16), "mlp" split over model=2
    assert [s["start"] for s in up] == [[0, 0], [16, 0]]
    assert sorted(s["process"] for s in up) == [0, 1]
    assert len(by_path["[0].head.weight"]) == 1  # replicated: written once
    written = {0: 0, 1: 0}
    for shards in by_path.values():
        for s in shards:
            size = np.prod(np.subtract(s["stop"], s["start"]))
            written[s["process"]] += int(size)
    assert min(written.values()) > 0.3 * sum(written.values()), written
    data_folders = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert header["data"] in data_folders and len(data_folders) == 2  # + killed

    # 4 devices in 1 process: restore, continue, save over the folder.
    (one,) = _run_job("one", 1, 4, work)
    assert one["metadata"] == {"step": 2}
    _same_sums(one["sums_at_2"], reference["sums_2"])
    _assert_same(one["continued"], _losses(reference, 2, 4))
    # The killed save's data folder is gone; the previous one is kept.
    assert one["entries"][0] == "data-" + one["entries"][0][5:]
    assert len([e for e in one["entries"] if e.startswith("data-")]) == 2
    assert "header.json" in one["entries"]

    # 8 devices in 4 processes, both axes across processes. Process 0 is
    # killed just before it commits its save.
    four = _run_job("four", 4, 2, work, killed=0)
    for i, out in enumerate(four):
        assert out["after_failed_save"] == {"step": 4}
        if i == 2:
            assert out["failed_save"].startswith("OSError: [Errno 28]")
        else:
            assert out["failed_save"].startswith("CheckpointError: the save of")
            assert "process 2: OSError: [Errno 28] No space left" in out["failed_save"]
        assert out["after_saved_alone"] == {"step": 4}
        _same_sums(out["sums_at_4"], one["sums_at_4"])
        _assert_same(out["continued"], _losses(reference, 4, 6))
        assert out["shard_replicated"] is True
        assert out["bytes"]["values_ok"] is True
        ratio = out["bytes"]["bytes_read"] / out["bytes"]["data_bytes"]
        print(f"4 processes: {out['bytes']} ({ratio:.3f} of the data)")
        assert 0.24 < ratio < 0.28, out["bytes"]
        assert out["saving_killed"] is True and "unexpected" not in out
    assert four[0]["saved_alone"].startswith("Process 1 did not call `pytreemod.save`")
    assert ptm.load_metadata(ckpt) == {"step": 4}
    loaded = ptm.load(ckpt, worker.start())
    _same_sums(worker.sums(loaded), one["sums_at_4"])


def test_a_save_on_one_process_into_a_folder_stays_a_folder(tmp_path):
    # An existing checkpoint folder is written as a folder by one process
    # too (so that a job resumed on fewer processes can save where it was).
    tree = {"w": jax.numpy.arange(6.0).reshape(2, 3), "n": 3, "a": np.ones(2)}
    folder = tmp_path / "ckpt"
    folder.mkdir()
    ptm.save(folder, tree, metadata={"step": 1})
    assert (folder / "header.json").is_file()
    out = ptm.load(folder, tree)
    assert ptm.tree_equal(out, tree)
    assert ptm.load_metadata(folder) == {"step": 1}
