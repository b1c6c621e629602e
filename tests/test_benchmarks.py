"""Smoke tests of the benchmark suite (`python -m benchmarks`).

The suite runs in-process in its quickest form (`--quick`, one round of a
fraction of a millisecond, no peers), so these tests check that it runs and
reports, not what the numbers are. The report's layout (width, columns, the
spread, `--compare`'s rule) is tested on rows made up for the purpose.
"""

import contextlib
import io
import json
import re
import statistics
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
from benchmarks._compare import change, compare, comparison_text
from benchmarks._peers import LEFT_OUT, build_peers
from benchmarks._plot import title
from benchmarks._progress import Progress
from benchmarks._report import machine, markdown_table, to_json
from benchmarks._runner import (
    ResultMismatch,
    Row,
    Timing,
    difference,
    run_case,
    time_interleaved,
)
from benchmarks._terminal import WIDTH, terminal_table
from benchmarks.cases import BY_NAME, CASES
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


def _table(out):
    """The terminal table's header and rows, as lists of cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case "))
    header = lines[start].split()
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return header, rows


def test_quick_run_prints_an_aligned_row_per_case_and_size(quick_run):
    status, out, err, _, _ = quick_run
    assert status == 0
    assert all(len(line) <= WIDTH for line in out.splitlines())
    header, rows = _table(out)
    assert header[:5] == ["case", "depth", "leaves", PYTREEMOD, FLOOR]
    assert "median" in header and "IQR" in header and "max/min" in header
    expected = [(c.name, str(s)) for c in CASES for s in c.quick_sizes]
    assert [(r[0], r[1]) for r in rows] == expected
    for cells in rows:
        # Each row has figures and a spread. Every pytreemod feature the
        # cases use exists now, so a case that cannot be built is a bug (the
        # sharded case once went unavailable when its rules broke, unseen).
        assert cells[2] != "unavailable:", cells
        assert re.fullmatch(r"[\d.]+–[\d.]+", cells[6]), cells
    # The progress bar went to stderr, the table to stdout only.
    assert "[" in err and "#" in err and "case " not in err


def test_quick_run_shows_progress_from_the_first_second(quick_run):
    err = quick_run[2]
    first_case = f"{CASES[0].name} depth {CASES[0].quick_sizes[0]}"
    before_first_step = err.split(" 1/")[0]
    for doing in ["starting JAX's CPU backend", f"{first_case}: building"]:
        assert doing in before_first_step
    assert f"{first_case}: compiling and checking answers" in err
    assert f"{first_case}: checked again" in err


def test_quick_run_peers_left_out_have_no_columns(quick_run):
    _, out, _, record, _ = quick_run
    for result in record["results"]:
        if result["status"] == "ok":
            assert result["absent"] == dict.fromkeys(PEERS, LEFT_OUT)
    for peer in PEERS:
        assert peer not in out
    assert "absent" not in out.lower()


def test_quick_run_json_has_every_figure_and_the_machine(quick_run):
    _, _, _, record, _ = quick_run
    assert set(record) == {"schema", "machine", "settings", "results"}
    assert record["schema"] == 2
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
        for name, (q1, q3) in r["iqr_us"].items():
            assert q1 == q3 == r["per_call_us"][name]  # one round
        assert r["ratio_to_floor_iqr"][FLOOR] == [1.0, 1.0]
        assert r["rounds_max_over_min"] == 1.0 and r["noisy"] is False
        assert all(n >= 1 for n in r["calls_per_round"].values())
        assert r["leaves"] > 0


def test_quick_run_plot(quick_run, monkeypatch, tmp_path):
    _, out, _, record, folder = quick_run
    assert f"Wrote the figures (JSON) to {folder / 'run.json'}" in out
    if _has_matplotlib():
        assert (folder / "run.png").read_bytes()[:4] == b"\x89PNG"
        assert f"Wrote the plot to {folder / 'run.png'}" in out
    # Without matplotlib, `--plot` fails at once, saying what to install.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    status, out, err = _main([*TINY, "--plot", str(tmp_path / "p.png")])
    assert status == 2 and out == ""
    assert "`--plot` needs matplotlib" in err and "pip install matplotlib" in err


def test_plot_title_names_machine_and_versions_of_what_ran():
    info = machine()
    info["peers"] = {"equinox": "0.13.8", "nnx": "0.12.8"}
    text = title(info, {"rounds": 21}, {PYTREEMOD, FLOOR, "equinox"})
    for part in [
        info["processor"],
        f"{info['cpu_count']} CPUs",
        f"JAX {jax.__version__}",
        "Equinox 0.13.8",
        "median of 21 interleaved rounds",
    ]:
        assert part in text
    assert "Flax" not in text  # NNX did not run


def test_quick_plot_has_no_single_point_panels():
    # `--quick` runs most cases at one size: those are in the summary panel
    # only, so the cases drawn over sizes must have two sizes or more.
    several = [c for c in CASES if len(c.quick_sizes) >= 2]
    assert len(several) >= 3
    assert {"jit_forward", "train_loop"} <= {c.name for c in several}


def _doctored(record, factor):
    """`record` as if pytreemod had been `factor` times as fast."""
    old = json.loads(json.dumps(record))
    for r in old["results"]:
        if r["status"] == "ok":
            r["per_call_us"][PYTREEMOD] /= factor
            r["ratio_to_floor"][PYTREEMOD] /= factor
            rounds = r.get("rounds_us", {})
            if PYTREEMOD in rounds:
                rounds[PYTREEMOD] = [t / factor for t in rounds[PYTREEMOD]]
    return old


def test_compare_flags_a_slower_case(tmp_path):
    # Three rounds (the median), and "before" 1000 times as fast: one noisy
    # round on a loaded machine must not decide the outcome.
    argv = [*TINY, "--only", "flatten_unflatten", "--rounds", "3"]
    _main([*argv, "--json", str(tmp_path / "before.json")])
    before = json.loads((tmp_path / "before.json").read_text())
    if before["results"][0]["status"] != "ok":
        pytest.fail("flatten_unflatten needs pytreemod.nn.MLP, which is not there")
    # An older baseline (schema 1, without the spreads) is still read: its
    # rounds hold everything the spreads are computed from.
    doctored = _doctored(before, 1000.0)
    doctored["schema"] = 1
    for r in doctored["results"]:
        del r["iqr_us"], r["ratio_to_floor_iqr"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doctored))
    status, out, _ = _main(
        [*argv, "--compare", str(old), "--json", str(tmp_path / "n")]
    )
    assert status == 0
    assert all(len(line) <= WIDTH for line in out.splitlines())
    assert "SLOWER" in out
    n = len(BY_NAME["flatten_unflatten"].quick_sizes)
    assert f"{n} of {n} compared case(s) flagged slower" in out
    for entry in json.loads((tmp_path / "n").read_text())["comparison"]:
        assert entry["slower_ratio"] and entry["slower_time"]
        assert entry["ratio"] == entry["time"] == "slower"


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
    # Without rounds, a spread is a point: only the 10% threshold applies.
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


@pytest.mark.parametrize(
    ("old", "new", "verdict"),
    [
        ((1.0, 0.95, 1.05), (1.3, 1.25, 1.35), "slower"),
        ((1.3, 1.25, 1.35), (1.0, 0.95, 1.05), "faster"),
        # 30% slower, but the old run's spread reaches the new median.
        ((1.0, 0.9, 1.4), (1.3, 1.25, 1.35), None),
        # 30% slower, but the new run's spread reaches the old median.
        ((1.0, 0.95, 1.05), (1.3, 0.9, 1.5), None),
        # Outside both spreads, but under 10%.
        ((1.0, 0.99, 1.01), (1.05, 1.04, 1.06), None),
    ],
)
def test_compare_flags_only_changes_outside_both_spreads(old, new, verdict):
    assert change(old[0], old[1:], new[0], new[1:]) == verdict


def _record(mine, floor):
    """A one-row record whose rounds are `mine` and `floor` (µs)."""
    row = _row({PYTREEMOD: mine, FLOOR: floor})
    return to_json([row], {"rounds": len(mine)})


def test_compare_of_a_noisy_run_is_not_a_regression():
    # The new run is 4 times as slow in the median time and its rounds are
    # all over the place, but the floor was as slow in the same rounds: the
    # ratio did not change, so only the time is flagged; and the noise of a
    # run whose rounds overlap the old ones flags nothing.
    old = _record([10.0, 10.5, 11.0, 10.2, 10.8], [8.0, 8.4, 8.8, 8.2, 8.6])
    loaded = _record([40.0, 42.0, 44.0, 41.0, 43.0], [32.0, 33.6, 35.2, 32.8, 34.4])
    [entry] = compare(old, loaded)
    assert entry["ratio"] is None and entry["time"] == "slower"
    noisy = _record([9.0, 10.0, 12.5, 30.0, 25.0], [8.0, 8.4, 8.8, 8.2, 8.6])
    [entry] = compare(old, noisy)
    assert entry["ratio"] is None and entry["time"] is None
    text = comparison_text([entry], "old.json")
    assert "0 of 1 compared case(s) flagged slower" in text
    assert all(len(line) <= WIDTH for line in text.splitlines())


def _row(rounds, case="flatten_unflatten", size=32, absent=None):
    """A made-up row: `rounds` maps each contender to its per-round µs."""
    timings = {
        name: Timing(statistics.median(r), tuple(r), 1) for name, r in rounds.items()
    }
    return Row(case, "depth", size, 132, timings, absent or {})


def test_terminal_table_fits_120_columns_with_every_peer_and_big_figures():
    big = [123_456.7, 99_999.9, 150_000.0]
    rows = [
        _row(
            {PYTREEMOD: [1.0, 1.1, 1.2], FLOOR: [90.0] * 3, "equinox": big, "nnx": big},
            case=case.name,
        )
        for case in CASES
    ]
    rows.append(Row("tracing", "depth", 8, None, {}, {}, "x" * 300))
    text = terminal_table(rows, rounds=3)
    assert all(len(line) <= WIDTH for line in text.splitlines())
    header, table = _table(text)
    assert header[3:7] == [PYTREEMOD, FLOOR, "equinox", "nnx"]
    assert table[0][-1] == "1.5×"  # the slowest round over the fastest
    assert "0.012×" in text  # small ratios keep a significant digit
    # The full Markdown table has every ratio.
    markdown = markdown_table(rows)
    assert "| equinox ÷ floor |" in markdown and "| pytreemod ÷ nnx |" in markdown


def test_absent_peers_have_no_columns_and_say_why():
    absent = {"equinox": "not importable (ModuleNotFoundError: x)", "nnx": LEFT_OUT}
    rows = [_row({PYTREEMOD: [1.0], FLOOR: [1.0]}, absent=absent)]
    header, _ = _table(terminal_table(rows, rounds=1))
    assert "equinox" not in header and "nnx" not in header
    text = terminal_table(rows, rounds=1)
    assert "Absent: equinox: not importable (ModuleNotFoundError: x)" in text
    assert "nnx" not in text  # left out on purpose: nothing to say
    markdown = markdown_table(rows)
    assert "equinox µs" not in markdown and "÷ nnx" not in markdown
    # A peer that ran somewhere gets its column, with "–" where it did not.
    rows.append(_row({PYTREEMOD: [1.0], FLOOR: [1.0], "nnx": [2.0]}, size=8))
    header, table = _table(terminal_table(rows, rounds=1))
    assert "nnx" in header and "equinox" not in header
    assert "–" in table[0] and "0.50×" in table[1]


def test_rounds_that_disagree_by_more_than_2x_are_marked_and_warned_about():
    calm = _row({PYTREEMOD: [10.0, 11.0, 12.0], FLOOR: [8.0, 8.5, 9.0]}, size=2)
    noisy = _row({PYTREEMOD: [10.0, 11.0, 12.0], FLOOR: [8.0, 8.5, 19.0]})
    text = terminal_table([calm, noisy], rounds=3)
    _, table = _table(text)
    assert table[0][-1] == "1.2×" and table[1][-2:] == ["2.4×", "!"]
    assert "! In 1 row(s) some contender's rounds disagree by more than 2x" in text
    assert "disagree" not in terminal_table([calm], rounds=3)


def _case(contenders, after=None, name="fake"):
    """A case whose contenders are given (as (name, answer) pairs; an answer
    may be a function of how many calls were made so far)."""

    def build(size, peers):
        built = []
        for n, a in contenders:
            calls = [0]

            def call(calls=calls):
                calls[0] += 1
                return jnp.zeros(())

            def result(a=a, calls=calls):
                return [jnp.asarray(a(calls[0]) if callable(a) else a)]

            built.append(Contender(n, call, result))
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
    match = (
        f"(?s)`pytreemod` does not compute what the floor computes\nbefore.*{message}"
    )
    with pytest.raises(ResultMismatch, match=match):
        run_case(case, 1, 1, 1e-4, Progress(2, io.StringIO()))


def test_answers_are_checked_again_after_the_timed_rounds():
    # Right on the first call, wrong once warm: as a cache that serves a
    # stale entry would be. Only the check after the rounds can see it.
    def stale(calls):
        return np.ones(3) if calls <= 1 else np.full(3, 2.0)

    case = _case([(PYTREEMOD, stale), (FLOOR, np.ones(3))])
    match = "(?s)`pytreemod` does not compute what the floor computes\nafter the timed"
    with pytest.raises(ResultMismatch, match=match):
        run_case(case, 1, 2, 1e-4, Progress(4, io.StringIO()))


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


def _built(name, depth):
    setup = BY_NAME[name].build(depth, ())
    return {c.name: c for c in setup.contenders}


def test_train_loop_steps_from_the_last_steps_model_and_answers_the_same():
    with jax.numpy_dtype_promotion("standard"):
        contenders = _built("train_loop", 2)
        mine = contenders[PYTREEMOD]
        first = mine.result()
        models = []
        for _ in range(3):
            mine.call()
            models.append(mine.call.model)
        opt_state = mine.call.opt_state
        # Each step's model is a new object, built from the last step's output.
        assert len({id(m) for m in models}) == 3
        assert int(opt_state[0].count) == 3
        # The answer comes from a fresh start, so it does not drift with calls.
        assert difference(first, mine.result()) is None
        assert difference(contenders[FLOOR].result(), first) is None


def test_tracing_passes_a_new_model_each_call():
    contenders = _built("tracing", 2)
    mine = contenders[PYTREEMOD]
    mine.prepare(3)
    models = [model for model, _ in mine.call.ready]
    assert len({id(m) for m in models}) == 3
    assert jax.tree_util.tree_structure(models[0]) == jax.tree_util.tree_structure(
        models[1]
    )
    for _ in range(3):
        mine.call()
    assert not mine.call.ready


def test_progress_note_names_the_work_without_a_step():
    stream = io.StringIO()
    progress = Progress(4, stream)
    progress.note("compiling")
    progress.advance("round 1")
    lines = stream.getvalue().splitlines()
    assert " 0/4 " in lines[0] and lines[0].endswith("compiling")
    assert " 1/4 " in lines[1] and lines[1].endswith("round 1")


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
