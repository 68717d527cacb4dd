"""Checks on the committed notebooks themselves (nbval then re-runs each one and compares outputs)."""

import re
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from coursetools.editions import format_problems

from conftest import NOTEBOOKS, ROOT

IGNORE_TAGS = {"raises-exception", "nbval-raises-exception"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
# What nbconvert and JupyterLab write: anything else is rewritten the moment JupyterLab opens the notebook,
# which marks it modified and lets autosave change the learner's clone.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    assert NOTEBOOKS[0].name == "00_start_here.ipynb"


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))), numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_uses_standard_kernel(path):
    nb = load(path)
    nbformat.validate(nb)
    assert dict(nb.metadata.get("kernelspec", {})) == KERNELSPEC, (
        f"{path.name}: kernelspec is {dict(nb.metadata.get('kernelspec', {}))}, expected {KERNELSPEC} "
        "(re-execute it with `make notebooks`)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_executed_top_to_bottom(path):
    counts = [c.execution_count for c in code_cells(load(path))]
    assert None not in counts, f"{path.name}: {counts.count(None)} code cell(s) never executed; run `make notebooks`"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts} are not 1..N"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stores_no_unexpected_error(path):
    for i, cell in enumerate(code_cells(load(path)), start=1):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        tags = set(cell.metadata.get("tags", []))
        if errors:
            assert tags & IGNORE_TAGS, (
                f"{path.name}, code cell {i}: stored {errors[0].ename} without a raises-exception tag"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_course_template(path):
    nb = load(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: must open with a title"
    header = first.source.lower()
    for part in ["you will learn", "prerequisites", "run time"]:
        assert part in header, f"{path.name}: the header must state '{part}'"
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    headings = [line for source in markdown for line in source.splitlines() if line.startswith("#")]
    assert any("summary" in h.lower() for h in headings), f"{path.name}: no Summary section"
    assert any("exercises" in h.lower() for h in headings), f"{path.name}: no Exercises section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    for cell in load(path).cells:
        if cell.cell_type != "markdown":
            continue
        for target in LINK.findall(cell.source):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = unquote(target.split("#")[0])
            assert (path.parent / file).exists(), f"{path.name}: link {target!r} points to nothing"


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (ROOT / unquote(target.split("#")[0])).exists(), f"README.md: link {target!r} points to nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_follow_the_course_format(path):
    """Prompt, solution cell with the markers, self-check cell right after it; at least two per notebook.

    That each self-check fails on the stub is checked by running the student edition: `make check-exercises`.
    """
    problems = format_problems(load(path))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


BAR_COUNT = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_progress_bars_show_their_final_state(path):
    """Where the widget cannot be drawn (GitHub, a reopened notebook), its stored text is what the reader sees."""
    for i, cell in enumerate(code_cells(load(path)), start=1):
        for output in cell.outputs:
            text = output.get("data", {}).get("text/plain", "")
            count = BAR_COUNT.search(text)
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}) and count:
                assert count.group(1) == count.group(2), (
                    f"{path.name}, code cell {i}: the stored progress bar reads {text!r}, not its final state; "
                    "create bars with transferlab.progress.tqdm (as fit does) and re-execute the notebook"
                )
