"""Every measured figure in README.md sits next to the command that produced it.

A figure: a decimal with a unit (``0.457 ms``, ``1.93x``, ``1.58 %``), ``~60 µs``, a ``±`` spread, a mean,
per-seed values (``0.955 / 0.966``) or a ``val_acc``/``ratio`` value. Next to its command: the paragraph,
list or table holding it, or the block that introduces it (a table's introduction, a fenced command, a
line ending with a colon), names a command (``python ...``, ``make ...``, ``bench/...``, ``pytest``).
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FIGURE = re.compile(
    r"(?<![\w.])(?:\d+\.\d+\s?(?:ms|µs|s|x|%)|~\d+\s?(?:ms|µs|s)|\d+\s?µs)(?!\w)"
    r"|±\s?\*{0,2}\d|\bmean \*{0,2}\d|\d\.\d+ / \d|\b(?:val_acc|ratio) \*{0,2}\d\.\d"
)
COMMAND = re.compile(r"\bpython |\bmake \w|\bbench/\w+\.py|\bpytest\b")


def blocks(text: str) -> list[str]:
    """Paragraphs, lists and tables (split at blank lines); a fenced block is one block of its own."""
    found, lines, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            if lines:
                found.append("\n".join(lines))
            lines = []
            if not fenced:
                found.append("```")
            fenced = not fenced
        elif fenced:
            found[-1] += "\n" + line
        elif line.strip():
            lines.append(line)
        elif lines:
            found.append("\n".join(lines))
            lines = []
    return [*found, "\n".join(lines)] if lines else found


def introduces(before: str, block: str) -> bool:
    """Whether ``before`` introduces ``block``: a fenced command, a line ending with a colon, or a table's
    introduction."""
    return before.startswith("```") or before.rstrip().endswith(":") or block.startswith("|")


def without_command(text: str) -> list[str]:
    """The blocks holding a figure with no command in them or in the block that introduces them."""
    missing, before = [], ""
    for block in blocks(text):
        if not block.startswith("```") and FIGURE.search(block):
            if not (COMMAND.search(block) or (introduces(before, block) and COMMAND.search(before))):
                missing.append(block)
        before = block
    return missing


def test_every_readme_figure_has_its_command_next_to_it():
    text = README.read_text(encoding="utf-8")
    assert len([b for b in blocks(text) if FIGURE.search(b)]) >= 10  # the figures are found at all
    missing = without_command(text)
    assert not missing, "figures without the command that reproduces them:\n\n" + "\n\n".join(missing)


def test_a_figure_whose_command_is_removed_is_found():
    text = README.read_text(encoding="utf-8")
    intro = next(b for b in blocks(text) if "`.venv/bin/python bench/overhead.py`" in b)
    assert without_command(text.replace(intro, "Measured on this machine:")) != []
    paragraph = "Training took 12.5 s a trial on this machine.\n\nMore text.\n"
    assert without_command(paragraph) == ["Training took 12.5 s a trial on this machine."]
    assert without_command("Measured with `.venv/bin/python bench/x.py`: 12.5 s a trial.\n") == []


def test_the_fine_tuning_figure_is_measured_by_the_quick_example_s_command():
    """The README's fine-tuning figure comes from its quick example; tests/test_hf.py's ``beats`` test runs
    the same overrides on a BERT pretrained for as many steps (issue 33: the figure did not reproduce from
    the README's command, whose overrides differed from the test's)."""
    import shlex

    from tests.test_hf import FIGURE_ARGS, PRETRAIN_STEPS

    text = README.read_text(encoding="utf-8")
    section = text[text.index("The quick example, offline, from this checkout") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    assert f"pretrained_bert(Path('tiny-bert'), steps={PRETRAIN_STEPS})" in block
    command = shlex.split(block[block.index("python -m sweeps.run") :].replace("\\\n", " "))
    start = command.index("sweeps.run") + 1
    overrides = [a for a in command[start:] if a not in ("-m", "model=hf", "model.pretrained=tiny-bert")]
    assert overrides == FIGURE_ARGS
    assert "seeds 0-4" in section and "early_stopping_patience=0" in block
