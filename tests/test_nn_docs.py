"""The code in the layers part of `docs/nn.md` runs, so that it cannot rot.

The blocks of the section from `<!-- section: dense, recurrent,
normalisation, wrappers, stacks -->` up to the next section marker run in
order in one namespace (later blocks use names from earlier ones), and each
asserts what it shows: the stacked model matches the unrolled loop, and the
end-to-end training loop halves its loss.
"""

import pathlib
import re

import jax

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "nn.md"
START = "<!-- section: dense, recurrent, normalisation, wrappers, stacks -->"


def _section_blocks() -> list[str]:
    text = DOC.read_text()
    section = text[text.index(START) + len(START) :]
    section = section.split("<!-- section:", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_layer_docs_examples_run():
    blocks = _section_blocks()
    assert len(blocks) >= 4
    namespace: dict = {}
    # Standard promotion, as users have it: optax's Adam mixes a float and an
    # int32 in its bias correction, which the suite's strict mode rejects.
    with jax.numpy_dtype_promotion("standard"):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    losses = namespace["losses"]
    assert losses[-1] < 0.5 * losses[0]
    assert namespace["preds"].shape == (128,)
