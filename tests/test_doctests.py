"""Every docstring example of the tfkd package runs and prints what it says.

The equivalent of `pytest --doctest-modules tfkd`, one test per module, with
`ELLIPSIS` and `NORMALIZE_WHITESPACE` (as Keras's own doctests use).
Examples that need files or long training are marked `# doctest: +SKIP`
in their docstrings.
"""

import doctest
import importlib
import io
import pkgutil

import pytest

import tfkd

MODULES = ["tfkd"] + sorted(
    m.name for m in pkgutil.walk_packages(tfkd.__path__, "tfkd.")
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Examples that write files write here.
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, name):
        runner.run(test, out=output.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples of {name} "
        f"failed:\n{output.getvalue()}")
