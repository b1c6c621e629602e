"""A griffe extension for the API site (mkdocs.yml loads it).

pytreemod's docstrings head their doctests `Example:`; griffe's Google-style
parser knows only `Examples:` as a section of code examples and would render
the `>>>` lines as Markdown text. This renames the heading before parsing.
"""

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
