"""Smoke tests of the benchmark suite (`python -m benchmarks`).

The suite runs in-process in its quickest form (`--quick`, one round of a
fraction of a millisecond, no peers), so these tests check that it runs and
reports, not what the numbers are.
"""

import contextlib
import io
import json
import re
import sys

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import benchmarks
from benchmarks import _peers
from benchmarks._case import (
    CONTENDERS,
    FLOOR,
    PEERS,
    PYTREEMOD,
    Case,
    Contender,
    Setup,
    Unavailable,
)
from benchmarks._peers import build_peers
from benchmarks._progress import Progress
from benchmarks._report import compare, markdown_table
from benchmarks._runner import ResultMismatch, difference, run_case, time_interleaved
from benchmarks.cases import CASES
from benchmarks.cases._models import replace_leaves, split_arrays

TINY = ["--quick", "--rounds", "1", "--round-ms", "0.2", "--peers", "none"]


def _main(argv):
    """Runs `benchmarks.main(argv)`, returning (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = benchmarks.main(argv)
    return status, out.getvalue(), err.getvalue()


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The whole suite, once, in its quickest form, with every output file."""
    folder = tmp_path_factory.mktemp("bench")
    argv = [*TINY, "--json", str(folder / "run.json")]
    if _has_matplotlib():
        argv += ["--plot", str(folder / "run.png")]
    status, out, err = _main(argv)
    record = json.loads((folder / "run.json").read_text())
    return status, out, err, record, folder


def _table_rows(out):
    return [line for line in out.splitlines() if line.startswith("| ")][1:]


def test_quick_run_prints_a_row_per_case_and_size(quick_run):
    status, out, err, _, _ = quick_run
    assert status == 0
    header = out.splitlines()[0]
    for column in ["case", "size", "leaves", "pytreemod µs", "floor µs"]:
        assert f"| {column} |" in header
    assert "| pytreemod ÷ floor |" in header
    assert all(f"| pytreemod ÷ {peer} |" in header for peer in PEERS)
    expected = [(c.name, f"depth {s}") for c in CASES for s in c.quick_sizes]
    rows = [line.split(" | ")[:2] for line in _table_rows(out)]
    assert [(r[0].lstrip("| "), r[1]) for r in rows] == expected
    for line in _table_rows(out):
        # Each row has figures, or says why it could not run.
        assert "unavailable: " in line or re.search(r"\| [\d,.]+ \| [\d,.]+ \|", line)
    # The progress bar went to stderr, the table to stdout only.
    assert "[" in err and "#" in err and "| case |" not in err


def test_quick_run_peers_left_out_are_reported_absent(quick_run):
    _, out, _, record, _ = quick_run
    for result in record["results"]:
        if result["status"] == "ok":
            assert result["absent"] == dict.fromkeys(PEERS, "left out (--peers)")
    if any(r["status"] == "ok" for r in record["results"]):
        assert "absent" in out


def test_quick_run_json_has_every_figure_and_the_machine(quick_run):
    _, _, _, record, _ = quick_run
    assert set(record) == {"schema", "machine", "settings", "results"}
    machine = record["machine"]
    for key in ["date", "platform", "cpu_count", "python", "jax", "jaxlib"]:
        assert machine[key]
    assert "pytreemod" in machine
    assert set(machine["peers"]) == set(PEERS)
    assert record["settings"]["rounds"] == 1
    assert record["settings"]["quick"] is True
    cases = [(r["case"], r["size"]) for r in record["results"]]
    assert cases == [(c.name, s) for c in CASES for s in c.quick_sizes]
    for r in record["results"]:
        if r["status"] == "unavailable":
            assert r["unavailable"]
            continue
        assert {PYTREEMOD, FLOOR} <= set(r["per_call_us"])
        assert set(r["per_call_us"]) <= set(CONTENDERS)
        assert all(t > 0 for t in r["per_call_us"].values())
        assert r["ratio_to_floor"][FLOOR] == 1.0
        assert all(len(v) == 1 for v in r["rounds_us"].values())
        assert all(n >= 1 for n in r["calls_per_round"].values())
        assert r["leaves"] > 0


def test_quick_run_plot(quick_run, monkeypatch, tmp_path):
    folder = quick_run[4]
    if _has_matplotlib():
        assert (folder / "run.png").read_bytes()[:4] == b"\x89PNG"
    # Without matplotlib, `--plot` fails at once, saying what to install.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    status, out, err = _main([*TINY, "--plot", str(tmp_path / "p.png")])
    assert status == 2 and out == ""
    assert "`--plot` needs matplotlib" in err and "pip install matplotlib" in err


def _doctored(record, factor):
    """`record` as if pytreemod had been `factor` times as fast."""
    old = json.loads(json.dumps(record))
    for r in old["results"]:
        if r["status"] == "ok":
            r["per_call_us"][PYTREEMOD] /= factor
            r["ratio_to_floor"][PYTREEMOD] /= factor
    return old


def test_compare_flags_a_slower_case(tmp_path):
    # Three rounds (the median), and "before" 1000 times as fast: one noisy
    # round on a loaded machine must not decide the outcome.
    argv = [*TINY, "--only", "flatten_unflatten", "--rounds", "3"]
    _main([*argv, "--json", str(tmp_path / "before.json")])
    before = json.loads((tmp_path / "before.json").read_text())
    if before["results"][0]["status"] != "ok":
        pytest.fail("flatten_unflatten needs pytreemod.nn.MLP, which is not there")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_doctored(before, 1000.0)))
    status, out, _ = _main(
        [*argv, "--compare", str(old), "--json", str(tmp_path / "n")]
    )
    assert status == 0
    assert "SLOWER by ratio to floor" in out and "SLOWER by time" in out
    assert "1 of 1 compared case(s) flagged slower" in out
    entry = json.loads((tmp_path / "n").read_text())["comparison"][0]
    assert entry["slower_ratio"] and entry["slower_time"]


def test_compare_rejects_a_file_it_did_not_write(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": []}))
    status, out, err = _main([*TINY, "--compare", str(other)])
    assert status == 2 and out == ""
    assert "`--compare` needs a file written by `python -m benchmarks --json`" in err


@pytest.mark.parametrize(
    ("factor", "flagged"), [(1.0, False), (1.05, False), (1.2, True), (0.5, False)]
)
def test_compare_threshold_is_ten_percent(factor, flagged):
    row = {"case": "c", "size_label": "depth", "size": 2, "status": "ok"}
    new = {
        "results": [
            {
                **row,
                "per_call_us": {PYTREEMOD: 10.0},
                "ratio_to_floor": {PYTREEMOD: 2.0},
            }
        ]
    }
    old = _doctored(new, factor)
    [entry] = compare(old, new)
    assert entry["slower_ratio"] is flagged and entry["slower_time"] is flagged


def _case(contenders, after=None, name="fake"):
    """A case whose contenders are given (as (name, answer) pairs)."""

    def build(size, peers):
        built = [
            Contender(n, lambda a=a: jnp.asarray(a), lambda a=a: [jnp.asarray(a)])
            for n, a in contenders
        ]
        return Setup(leaves=1, contenders=built, after=after)

    return Case(name, "a test case", "depth", (1,), (1,), build)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (np.full(3, 1.5), "differs from the floor's by up to 0.5"),
        (np.ones(4), r"has shape \(4,\), the floor's \(3,\)"),
    ],
)
def test_a_contender_with_a_wrong_answer_raises(wrong, message):
    case = _case([(PYTREEMOD, wrong), (FLOOR, np.ones(3))])
    match = f"(?s)`pytreemod` does not compute what the floor computes.*{message}"
    with pytest.raises(ResultMismatch, match=match):
        run_case(case, 1, 1, 1e-4, Progress(2, io.StringIO()))


def test_agreeing_contenders_are_timed_and_after_runs():
    ran = []
    case = _case([(PYTREEMOD, np.ones(3)), (FLOOR, np.ones(3))], lambda: ran.append(1))
    row = run_case(case, 1, 3, 1e-4, Progress(4, io.StringIO()))
    assert set(row.timings) == {PYTREEMOD, FLOOR} and ran == [1]
    assert all(len(t.rounds_us) == 3 for t in row.timings.values())


def test_an_unavailable_case_is_a_row_not_an_error():
    def build(size, peers):
        raise Unavailable("pytreemod.frobnicate is not there yet")

    case = Case("later", "not yet", "depth", (1,), (1,), build)
    row = run_case(case, 1, 2, 1e-4, Progress(3, io.StringIO()))
    assert row.unavailable == "pytreemod.frobnicate is not there yet"
    assert "| later | depth 1 | unavailable: pytreemod.frobnicate" in markdown_table(
        [row]
    )


def test_peers_that_are_missing_or_fail_to_build_are_absent(monkeypatch):
    # Stand-in module names, so that no real peer is imported by the tests.
    modules = {"equinox": "json", "nnx": "no_such_module_for_pytreemod_tests"}
    monkeypatch.setattr(_peers, "_MODULES", modules)

    def broken(module):
        raise TypeError("no such argument")

    built, absent = build_peers(dict.fromkeys(PEERS, broken))
    assert built == []
    assert absent["equinox"] == "failed to build (TypeError: no such argument)"
    assert absent["nnx"].startswith("not importable (ModuleNotFoundError")

    def working(module):
        return Contender("equinox", lambda: module.dumps(1), lambda: [])

    built, absent = build_peers({"equinox": working})
    assert [c.name for c in built] == ["equinox"] and built[0].call() == "1"
    assert absent == {"nnx": "no like-for-like version of this case"}
    assert build_peers({}, wanted=())[1] == dict.fromkeys(PEERS, "left out (--peers)")


def test_rounds_are_interleaved_between_contenders():
    log = []

    def contender(name):
        return Contender(name, lambda: log.append(name), lambda: [])

    contenders = [contender(n) for n in "ABC"]
    timings = time_interleaved(contenders, rounds=3, round_s=1e-4)
    batches = {n: t.calls_per_round for n, t in timings.items()}
    timed = log[-sum(batches.values()) * 3 :]
    runs = [name for i, name in enumerate(timed) if i == 0 or timed[i - 1] != name]
    assert runs == list("ABCABCABC")
    assert all(len(t.rounds_us) == 3 for t in timings.values())


def test_only_rejects_an_unknown_case(capsys):
    with pytest.raises(SystemExit, match="2"):
        benchmarks.main(["--only", "flatten_unflatten,nope"])
    assert "unknown case(s) ['nope']" in capsys.readouterr().err


leaf = st.one_of(
    st.integers(0, 5).map(lambda n: jnp.arange(n, dtype=jnp.float32)),
    st.integers(-3, 3),
    st.sampled_from(["a", None, abs]),
)
trees = st.recursive(
    leaf,
    lambda sub: st.one_of(
        st.lists(sub, max_size=3),
        st.dictionaries(st.sampled_from("xyz"), sub, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None)
@given(trees)
def test_split_arrays_round_trips(tree):
    arrays, rebuild = split_arrays(tree)
    assert all(isinstance(a, jax.Array) for a in arrays)
    again = rebuild(arrays)
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(tree)
    assert difference(_leaves(tree), _leaves(again)) is None


@settings(max_examples=30, deadline=None)
@given(trees)
def test_replace_leaves_by_path_round_trips(tree):
    with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    new = {
        jax.tree_util.keystr(p): x + 1
        for p, x in with_paths
        if isinstance(x, jax.Array)
    }
    replaced = replace_leaves(tree, new)
    back = replace_leaves(replaced, {k: v - 1 for k, v in new.items()})
    assert difference(_leaves(tree), _leaves(back)) is None
    assert len(_leaves(replaced)) == len(_leaves(tree))


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)
