"""Griffe extension: render Keras-style doctest examples as code blocks.

tfkd's docstrings follow Keras: an `Example:` line, a blank line, then
`>>>` lines at the docstring's own indentation. Google-style parsers expect
a section's content indented under its title, so without help the examples
would be read as Markdown text (where `[1, 2]` looks like a link). This
extension wraps every run of doctest lines (`>>>` / `...` and the expected
output up to the next blank line) in a fenced `pycon` code block.
"""

import re

import griffe

_PROMPT = re.compile(r"^(\s*)>>> ?")


def fence_doctests(text):
    """Wraps doctest blocks of a docstring in ```pycon fences."""
    lines = text.splitlines()
    out = []
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        match = None if in_fence else _PROMPT.match(line)
        if match is None:
            out.append(line)
            i += 1
            continue
        indent = match.group(1)
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent):]
                         if lines[i].startswith(indent) else lines[i])
            i += 1
        out.append(f"{indent}```pycon")
        out.extend(indent + b for b in block)
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctest examples of every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
