"""The code of `docs/surgery.md` runs, so that it cannot rot.

The blocks between `<!-- section: examples -->` and `<!-- section: end -->`
run in order in one namespace (later blocks use names from earlier ones);
each asserts what it shows, and the LoRA training loop must lower its loss.
"""

import pathlib
import re

import jax

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "surgery.md"


def _blocks() -> list[str]:
    text = DOC.read_text()
    start = "<!-- section: examples -->"
    section = text[text.index(start) + len(start) : text.index("<!-- section: end -->")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_surgery_docs_examples_run():
    blocks = _blocks()
    assert len(blocks) >= 7
    namespace: dict = {}
    # Standard promotion, as users have it: optax's Adam mixes a float and an
    # int32 in its bias correction, which the suite's strict mode rejects.
    with jax.numpy_dtype_promotion("standard"):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    losses = namespace["losses"]
    assert losses[-1] < 0.7 * losses[0]
    assert set(namespace["recovered"]) == {f".blocks[{i}]" for i in range(4)}
