"""README's Python code runs exactly as written.

The blocks are read from README.md and executed in order, in one
namespace, unchanged. What makes the test fast is the data, not the code:
a fixture shrinks every split `tfkd.data.load_digits` returns to its first
batch, so the README's 20 + 30 + 30 epochs take seconds. (Chosen
over an environment variable that would change the epochs: that would
need code in the README that users would then copy.)
"""

import os
import re

import pytest

import tfkd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def small_digits(monkeypatch):
    real = tfkd.data.load_digits

    def load_digits(*args, **kwargs):
        data = real(*args, **kwargs)
        return data._replace(train=data.train.take(1),
                             validation=data.validation.take(1),
                             test=data.test.take(1))

    monkeypatch.setattr(tfkd.data, "load_digits", load_digits)


def test_readme_python_blocks_run_as_written(small_digits, tmp_path,
                                             monkeypatch, capsys):
    blocks = _python_blocks()
    assert blocks, "README.md has no ```python block"
    assert "labels_per_class=6" in blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md block {i + 1}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    shown = [line.split(":")[0] for line in printed if "% test" in line]
    assert shown == ["teacher", "student alone", "student distilled"]
    for line in printed:
        if "% test" in line:
            value = float(line.split(":")[1].split("%")[0])
            assert 0.0 <= value <= 100.0
    assert (tmp_path / "student.keras").exists()
    # The saved student holds no teacher weights.
    student = tfkd.saving.load(str(tmp_path / "student.keras"))
    assert student.count_params() == tfkd.models.digits_student(
    ).count_params()


def test_readme_snippet_is_seeded_and_quotes_its_table():
    """The snippet is seeded, and every `NAME, mean ± std %` it quotes
    (or `NAME (mean ± std %`) is the README table's 6-labels value for that
    method; no method is said to "win" (the top rows are within noise)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    snippet = _python_blocks()[0]
    assert "keras.utils.set_random_seed(" in snippet
    table = dict(re.findall(
        r"^\| `(\w+)` \| (\d+\.\d ± \d+\.\d) \|", text, flags=re.M))
    quoted = re.findall(r"\b([A-Z]{2,4})\b[^0-9#\n]{0,12}(\d+\.\d ± \d+\.\d) %",
                        snippet.replace("\n# ", " "))
    assert quoted, snippet
    for method, value in quoted:
        assert table[method.lower()] == value, (method, value, table)
    assert "wins" not in text
