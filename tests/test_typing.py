"""Type checkers see Modules, their fields and `filter_jit`'s signature.

pyright (strict) and mypy check `tests/typing/user_code.py`, a user's file,
from a folder outside the project, so `import pytreemod` resolves only through
the installed (editable) package, as it does in a user's editor. The markers in
that file say which lines must be flagged and what `reveal_type` must show.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

USER_CODE = pathlib.Path(__file__).resolve().parent / "typing" / "user_code.py"
_MISSING = (
    "{tool} is not installed in this environment; it is part of the `test` "
    "extra: `pip install -e '.[test]'`."
)
# How many of the typical misuses in `user_code.py` each checker flags today,
# of the 10 there: all but assigning to a field after `__init__` (the one
# `# unflagged` line). It may grow, never shrink: a marker turned into
# `# unflagged`, or a mistake deleted, fails the tests below.
_FLAGGED_MISUSES = 9
_UNFLAGGED_MISUSES = 1


def _markers(kind: str) -> dict[int, str]:
    found = {}
    for number, line in enumerate(USER_CODE.read_text().splitlines(), start=1):
        # A marker is a comment after code, e.g. `Counter()  # error: ...`.
        match = re.search(rf"\S  # {kind}\b:?\s*(.*)$", line)
        if match:
            found[number] = match[1]
    return found


def _normalise(revealed: str) -> str:
    # mypy spells `pytreemod.nn._linear.Linear` and `[model: ...]` where pyright
    # says `Linear` and `(model: ...)`.
    revealed = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", revealed)
    return re.sub(r"[\[\]()]", " ", revealed)


def _run(tmp_path: pathlib.Path, *command: str) -> str:
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}
    shutil.copy(USER_CODE, tmp_path / USER_CODE.name)
    result = subprocess.run(
        [sys.executable, "-m", *command, USER_CODE.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "No module named" in result.stderr:
        pytest.fail(_MISSING.format(tool=command[0]) + "\n" + result.stderr)
    return result.stdout


def test_the_count_of_flagged_misuses_never_shrinks():
    # Pins the markers themselves; the checker tests below pin that each
    # checker flags every `# error` line.
    assert len(_markers("error")) >= _FLAGGED_MISUSES
    assert len(_markers("unflagged")) <= _UNFLAGGED_MISUSES


def _check(errors: dict[int, str], revealed: dict[int, str], checker: str) -> None:
    expected_errors = set(_markers("error"))
    flagged = expected_errors & set(errors)
    assert len(flagged) >= _FLAGGED_MISUSES, (
        f"{checker} flags {len(flagged)} of the typical misuses, fewer than "
        f"the {_FLAGGED_MISUSES} it flagged before"
    )
    unexpected = {n: m for n, m in errors.items() if n not in expected_errors}
    assert not unexpected, f"{checker} flagged lines that are correct: {unexpected}"
    missed = sorted(expected_errors - set(errors))
    assert not missed, f"{checker} did not flag the mistakes on lines {missed}"
    for number in _markers("unflagged"):
        assert number not in errors, f"{checker} now flags line {number}: {errors}"
    for number, text in _markers("reveal").items():
        assert number in revealed, f"{checker} revealed nothing on line {number}"
        assert _normalise(text) in _normalise(revealed[number]), (
            f"{checker}, line {number}: expected {text!r} in {revealed[number]!r}"
        )


def test_pyright_strict_sees_modules(tmp_path):
    out = _run(tmp_path, "pyright", "--outputjson", "--pythonpath", sys.executable)
    diagnostics = json.loads(out)["generalDiagnostics"]
    errors, revealed = {}, {}
    for diagnostic in diagnostics:
        line = diagnostic["range"]["start"]["line"] + 1
        message = diagnostic["message"]
        if diagnostic["severity"] == "error":
            errors[line] = message
        elif match := re.match(r'Type of ".*" is "(.*)"$', message, re.DOTALL):
            revealed[line] = match[1]
    assert "reportMissingImports" not in {d.get("rule") for d in diagnostics}
    _check(errors, revealed, "pyright")


def test_mypy_sees_modules(tmp_path):
    out = _run(
        tmp_path,
        "mypy",
        "--strict",
        "--no-error-summary",
        "--show-error-codes",
        f"--cache-dir={tmp_path / 'cache'}",
    )
    errors, revealed = {}, {}
    for match in re.finditer(r"^[\w.]+:(\d+): (error|note): (.*)$", out, re.M):
        line, kind, message = int(match[1]), match[2], match[3]
        if kind == "error":
            errors[line] = message
        elif note := re.match(r'Revealed type is "(.*)"$', message):
            revealed[line] = note[1]
    assert "import-not-found" not in out, out
    _check(errors, revealed, "mypy")
