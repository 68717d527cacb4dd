"""Editions of the course notebooks for teachers: student copies, clean copies, HTML handouts.

- **student**: every solution block (nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION``) becomes
  ``# YOUR CODE HERE`` + ``raise NotImplementedError()``; the outputs of exercise cells are cleared,
  every other output is kept so the lesson still reads.
- **clean** (fastbook's habit): headings and code only, no outputs, for revision: say what each cell
  does, then run it to check. The questionnaire's questions stay; their answers go.
- **handout**: one self-contained HTML file per executed notebook (images inline, no scripts), links
  between notebooks pointing to the other handouts.

Run ``python -m coursetools.editions student|clean|handouts [--out DIR]`` from the repository root
(``make student``, ``make revision``, ``make handouts``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from transferlab.serialization import atomic_open

__all__ = [
    "BEGIN",
    "CHECK_TAG",
    "END",
    "SOLUTION_TAG",
    "STUB",
    "build",
    "clean_notebook",
    "edition_of",
    "execute",
    "exercise_cells",
    "format_problems",
    "handout_html",
    "has_learner_work",
    "source_commit",
    "stub_run_problems",
    "stub_solutions",
    "student_notebook",
    "with_wrong_answers",
    "wrong_answers",
]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
SOLUTION_TAG, CHECK_TAG = "solution", "self-check"
WRONG_TAG, WRONG_CHECK_TAG = "wrong-answer", "wrong-answer-check"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NOTEBOOK_LINK = re.compile(r"\]\((\d\d_[^)\s#]+)\.ipynb(#[^)\s]*)?\)")
EXERCISE_PROMPT = re.compile(r"^\*\*Exercise (\d+)\.", re.M)  # "**Exercise 1.** ..." or "**Exercise 1. Title**"
MIN_EXERCISES = 2
RELATIVE_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)")


def stub_solutions(source: str, where: str = "cell") -> str:
    """Replace every block between the solution markers by nbgrader's stub, at the marker's indentation.

    Lines above ``### BEGIN SOLUTION`` (the placeholders) and below ``### END SOLUTION`` stay.

    Example:
        >>> print(stub_solutions("x = None\\n### BEGIN SOLUTION\\nx = 1\\n### END SOLUTION"))
        x = None
        # YOUR CODE HERE
        raise NotImplementedError()
    """
    out: list[str] = []
    inside, blocks = False, 0
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: '{BEGIN}' inside a solution block; close it with '{END}'.")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: '{END}' without a '{BEGIN}' above it.")
            inside, blocks = False, blocks + 1
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{BEGIN}' is never closed; add '{END}' after the solution.")
    if blocks == 0:
        raise ValueError(f"{where}: no '{BEGIN}' ... '{END}' block; wrap the reference solution in the markers.")
    return "\n".join(out)


def _tags(cell: NotebookNode) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def exercise_cells(nb: NotebookNode) -> list[tuple[int, int]]:
    """(solution, self-check) cell indices of every exercise, checking the course's exercise format.

    Raises:
        ValueError: a ``solution`` cell that is not a code cell followed by a ``self-check`` code cell.

    Example:
        >>> exercise_cells(nbformat.v4.new_notebook())
        []
    """
    pairs = []
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG not in _tags(cell):
            continue
        following = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        if cell.cell_type != "code" or following is None or following.cell_type != "code":
            raise ValueError(f"cell {i}: a '{SOLUTION_TAG}' cell must be a code cell followed by a code cell.")
        if CHECK_TAG not in _tags(following):
            raise ValueError(f"cell {i + 1}: the cell after a '{SOLUTION_TAG}' cell must be tagged '{CHECK_TAG}'.")
        pairs.append((i, i + 1))
    return pairs


def format_problems(nb: NotebookNode) -> list[str]:
    """What breaks the course's exercise format in ``nb`` (empty when it follows it).

    The format: at least two exercises, each a markdown prompt ``**Exercise N.**`` (N = 1, 2, ...), a code
    cell tagged ``solution`` with its reference solution between the markers, then a code cell tagged
    ``self-check`` whose every ``assert`` has a message. Whether each self-check fails on the stub needs a
    run: see `stub_run_problems`.

    Example:
        >>> format_problems(nbformat.v4.new_notebook())[0]
        "0 coding exercise(s) (cells tagged 'solution'); the course asks for at least 2"
    """
    try:
        pairs = exercise_cells(nb)
    except ValueError as err:
        return [str(err)]
    problems = []
    if len(pairs) < MIN_EXERCISES:
        problems.append(
            f"{len(pairs)} coding exercise(s) (cells tagged '{SOLUTION_TAG}'); the course asks for "
            f"at least {MIN_EXERCISES}"
        )
    checks = {check for _, check in pairs}
    orphans = [i for i, cell in enumerate(nb.cells) if CHECK_TAG in _tags(cell) and i not in checks]
    if orphans:
        problems.append(f"cells {orphans} are tagged '{CHECK_TAG}' but follow no '{SOLUTION_TAG}' cell")
    previous, numbers = 0, []
    for solution, check in pairs:
        try:
            stub_solutions(nb.cells[solution].source, where=f"cell {solution}")
        except ValueError as err:
            problems.append(str(err))
        prompts = [
            n
            for c in nb.cells[previous:solution]
            if c.cell_type == "markdown"
            for n in EXERCISE_PROMPT.findall(c.source)
        ]
        if prompts:
            numbers.append(int(prompts[-1]))
        else:
            problems.append(f"cell {solution}: no '**Exercise N.** ...' markdown prompt above this solution cell")
        problems.extend(f"cell {check}: {problem}" for problem in _check_problems(nb.cells[check].source))
        try:
            for answer in wrong_answers(nb.cells[solution]):
                ast.parse(answer)
        except (ValueError, SyntaxError) as err:
            problems.append(f"cell {solution}: a wrong answer in its metadata is not valid ({err})")
        previous = check + 1
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"exercises are numbered {numbers}; expected 1, 2, ... in order")
    return problems


def wrong_answers(cell: NotebookNode) -> list[str]:
    """The deliberately wrong answers stored with a solution cell (``metadata.transferlab.wrong_answers``).

    Each is code a learner might plausibly write (a constant, a copy of the input, a recipe with one step
    missing); the stub run executes it in place of the solution and expects the self-check to fail on it.

    Example:
        >>> cell = nbformat.v4.new_code_cell("x = 1", metadata={"transferlab": {"wrong_answers": ["x = 0"]}})
        >>> wrong_answers(cell)
        ['x = 0']
    """
    answers = cell.get("metadata", {}).get("transferlab", {}).get("wrong_answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError("metadata.transferlab.wrong_answers must be a list of code strings")
    return list(answers)


def with_wrong_answers(nb: NotebookNode) -> NotebookNode:
    """A copy of ``nb`` where each self-check is followed by every wrong answer and the self-check again.

    The inserted cells are tagged ``wrong-answer`` (must run) and ``wrong-answer-check`` (must fail with an
    ``AssertionError``): `stub_run_problems` checks both.

    Example:
        >>> with_wrong_answers(nbformat.v4.new_notebook()).cells
        []
    """
    nb = copy.deepcopy(nb)
    for solution, check in reversed(exercise_cells(nb)):
        inserted = []
        for answer in wrong_answers(nb.cells[solution]):
            inserted.append(nbformat.v4.new_code_cell(answer, metadata={"tags": [WRONG_TAG]}))
            inserted.append(nbformat.v4.new_code_cell(nb.cells[check].source, metadata={"tags": [WRONG_CHECK_TAG]}))
        nb.cells[check + 1 : check + 1] = inserted
    return nb


def _check_problems(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return [f"the self-check does not parse ({err.msg}, line {err.lineno})"]
    asserts = [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    if not asserts:
        return ["a self-check must assert on the learner's results"]
    silent = [node.lineno for node in asserts if node.msg is None]
    if silent:
        return [f"assert(s) on line(s) {silent} need a message saying what was expected and what was found"]
    return []


def _clear(cell: NotebookNode) -> None:
    cell.outputs, cell.execution_count = [], None


def _header(cell: NotebookNode, line: str) -> None:
    """Put ``line`` right under the notebook's title (or at the top when cell 0 is not a titled markdown cell)."""
    lines = cell.source.splitlines() if cell.cell_type == "markdown" else []
    if lines and lines[0].startswith("# "):
        cell.source = "\n".join([lines[0], "", line, *lines[1:]])
    else:
        raise ValueError("cell 0 must be the markdown header '# NN · Title' (the edition's note goes under it).")


def student_notebook(nb: NotebookNode, commit: str) -> NotebookNode:
    """A student edition: solution blocks stubbed, exercise outputs cleared, other outputs kept.

    Example:
        >>> student = student_notebook(nbformat.read("notebooks/00_start_here.ipynb", 4), "abc1234")  # doctest: +SKIP
    """
    nb = copy.deepcopy(nb)
    for solution, check in exercise_cells(nb):
        nb.cells[solution].source = stub_solutions(nb.cells[solution].source, where=f"cell {solution}")
        _clear(nb.cells[solution])
        _clear(nb.cells[check])
    _header(
        nb.cells[0],
        f"*Student edition of transferlab commit `{commit}`: in each exercise, replace "
        "`# YOUR CODE HERE` and `raise NotImplementedError()` by your code, then run the "
        "self-check cell below it.*",
    )
    nb.metadata["transferlab"] = {"edition": "student", "commit": commit}
    return nb


def execute(nb: NotebookNode, cwd: Path, timeout: int = 600) -> NotebookNode:
    """Run a copy of ``nb`` in a fresh ``python3`` kernel from ``cwd``, errors allowed (every cell runs).

    Example:
        >>> ran = execute(student_notebook(nb, "abc1234"), Path("notebooks"))  # doctest: +SKIP
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=True,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


RAISES_TAGS = {"raises-exception", "nbval-raises-exception"}


def stub_run_problems(ran: NotebookNode) -> list[str]:
    """What is wrong with an executed student edition (empty when all is right).

    Right means: each solution cell stops at its stub (``NotImplementedError``); each self-check fails
    with an ``AssertionError`` that carries a message; each wrong answer inserted by `with_wrong_answers`
    runs and its self-check fails the same way; no other cell fails, except one tagged ``raises-exception``.

    Example:
        >>> stub_run_problems(execute(student_notebook(nb, "abc1234"), Path("notebooks")))  # doctest: +SKIP
        []
    """
    problems = []
    solutions, checks = set(), set()
    for solution, check in exercise_cells(ran):
        solutions.add(solution)
        checks.add(check)
    for i, cell in enumerate(ran.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        found = f"{errors[0].ename}: {errors[0].evalue}" if errors else "no error"
        tags = _tags(cell)
        if WRONG_TAG in tags:
            if errors:
                problems.append(f"cell {i} (wrong answer): the wrong answer itself failed ({found}); it must run")
            continue
        if WRONG_CHECK_TAG in tags:
            if not (errors and errors[0].ename == "AssertionError" and errors[0].evalue.strip()):
                problems.append(
                    f"cell {i} (self-check after a wrong answer): expected an AssertionError with a "
                    f"message, found {found}: the self-check passes a wrong answer"
                )
            continue
        if i in solutions and not (errors and errors[0].ename == "NotImplementedError"):
            problems.append(f"cell {i} (solution): expected the stub's NotImplementedError, found {found}")
        elif i in checks and not (errors and errors[0].ename == "AssertionError" and errors[0].evalue.strip()):
            problems.append(f"cell {i} (self-check): expected an AssertionError with a message, found {found}")
        elif i not in solutions | checks and errors and not _tags(cell) & RAISES_TAGS:
            problems.append(f"cell {i}: {found} (only solution and self-check cells may fail on the stub)")
    return problems


def _is_answer(cell: NotebookNode) -> bool:
    return "<details" in cell.source or cell.get("metadata", {}).get("jupyter", {}).get("source_hidden", False)


def clean_notebook(nb: NotebookNode, commit: str) -> NotebookNode:
    """A clean edition (fastbook's): headings and code only, outputs cleared; questionnaire questions kept.

    Example:
        >>> clean = clean_notebook(nbformat.read("notebooks/00_start_here.ipynb", 4), "abc1234")  # doctest: +SKIP
    """
    cells, section = [], ""
    for cell in copy.deepcopy(nb.cells):
        if cell.cell_type == "code":
            _clear(cell)
            cell.metadata.pop("jupyter", None)
            cells.append(cell)
            continue
        if cell.cell_type != "markdown":
            continue
        headings = [line for line in cell.source.splitlines() if line.startswith("#")]
        if headings:
            section = headings[-1].lstrip("#").strip().lower()
        if section == "questionnaire" and not _is_answer(cell):  # the questions, for revision
            cells.append(cell)
        elif headings:
            cells.append(nbformat.v4.new_markdown_cell("\n\n".join(headings)))
    out = copy.deepcopy(nb)
    out.cells = cells
    out.metadata.pop("widgets", None)
    _header(
        out.cells[0],
        f"*Clean edition of transferlab commit `{commit}`: the lesson without its prose and "
        "outputs. Before you run each cell, say what it does and what it will print.*",
    )
    out.metadata["transferlab"] = {"edition": "clean", "commit": commit}
    return out


def _handout_links(source: str, notebook_dir: Path, out_dir: Path) -> str:
    """Links to notebooks point to their handouts; other relative links still reach their file from ``out_dir``."""
    source = NOTEBOOK_LINK.sub(lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", source)

    def relink(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.endswith(".html") or target.split("#")[0].endswith(".html"):
            return match.group(0)
        return f"]({Path(os.path.relpath(notebook_dir / target, out_dir)).as_posix()})"

    return RELATIVE_LINK.sub(relink, source)


HANDOUT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}{%- if resources.transferlab_maths -%}{{ super() }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
"""
MATHS = re.compile(r"\$[^$\n]+\$|\$\$")


def handout_html(nb: NotebookNode, notebook_dir: Path, out_dir: Path) -> str:
    """Self-contained HTML of an executed notebook: images inline, widgets as their stored text, no scripts.

    Only a notebook whose markdown holds maths loads MathJax (from its CDN; offline the TeX shows as written).

    Example:
        >>> nb = nbformat.read("notebooks/00_start_here.ipynb", 4)  # doctest: +SKIP
        >>> html = handout_html(nb, Path("notebooks"), Path("build/handouts"))  # doctest: +SKIP
    """
    import jinja2
    from nbconvert import HTMLExporter

    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    unrun = [i for i, c in code if c.execution_count is None]
    if unrun:
        raise ValueError(f"code cells {unrun} were never executed; a handout needs an executed notebook.")
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    maths = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            maths = maths or bool(MATHS.search(cell.source))
            cell.source = _handout_links(cell.source, notebook_dir, out_dir)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)  # no widget manager in a handout: show the stored text
    exporter = HTMLExporter(
        template_name="lab", embed_images=True, extra_loaders=[jinja2.DictLoader({"handout.html.j2": HANDOUT_TEMPLATE})]
    )
    exporter.template_file = "handout.html.j2"
    first = nb.cells[0].source.splitlines() if nb.cells else []
    title = first[0].lstrip("# ").strip() if first and first[0].startswith("# ") else "transferlab"
    resources = {"transferlab_maths": maths, "metadata": {"name": title, "path": str(notebook_dir)}}
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    return html


def source_commit(root: Path) -> str:
    """The short commit hash of ``root``'s checkout, with ``+changes`` if its notebooks differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "notebooks")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+changes" if dirty else "")


def edition_of(nb: NotebookNode) -> str | None:
    """``"student"`` / ``"clean"`` for a notebook this module wrote, else ``None``."""
    return nb.metadata.get("transferlab", {}).get("edition")


def has_learner_work(path: Path) -> bool:
    """Whether the student notebook at ``path`` holds a learner's work: an exercise cell run or its stub replaced.

    ``make student`` does not overwrite such a file (``--force`` does).
    """
    try:
        nb = nbformat.read(path, as_version=4)
        pairs = exercise_cells(nb)
    except (OSError, ValueError, nbformat.ValidationError):
        return path.exists()  # unreadable or reshaped by hand: keep it
    if edition_of(nb) != "student":
        return True
    cells = [nb.cells[i] for pair in pairs for i in pair]
    return any(c.execution_count is not None or c.outputs for c in cells) or any(
        STUB[0] not in nb.cells[solution].source for solution, _ in pairs
    )


def _write(text: str, path: Path) -> None:
    with atomic_open(path) as f:  # the package's writer: an interrupted build leaves no half-written edition
        f.write(text.encode("utf-8"))


def build(edition: str, notebooks: Iterable[Path], out_dir: Path, commit: str) -> list[Path]:
    """Write one edition (``student``, ``clean`` or ``handouts``) of each notebook into ``out_dir``.

    Returns the notebooks (or handouts) written. The student and clean editions also get a copy of the scripts next
    to the notebooks (``*.py``: notebook 11 runs one); the handouts link to them.

    Example:
        >>> notebooks = sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
        >>> build("student", notebooks, Path("build/student"), "abc1234")  # doctest: +SKIP
    """
    notebooks = list(notebooks)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        try:
            if edition == "handouts":
                target = out_dir / (path.stem + ".html")
                _write(handout_html(nb, path.parent, out_dir), target)
            else:
                made = {"student": student_notebook, "clean": clean_notebook}[edition](nb, commit)
                nbformat.validate(made)
                target = out_dir / path.name
                _write(nbformat.writes(made), target)
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from None
        written.append(target)
    if edition != "handouts":  # the notebooks' companion scripts (11 launches ddp_finetune.py) go with them
        for script in sorted({s for path in notebooks for s in path.parent.glob("*.py")}):
            with atomic_open(out_dir / script.name) as f:
                f.write(script.read_bytes())
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coursetools.editions", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("edition", choices=["student", "clean", "handouts"])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    parser.add_argument("--out", type=Path, help="default: build/<edition>")
    parser.add_argument("--force", action="store_true", help="overwrite student notebooks that hold a learner's work")
    args = parser.parse_args(argv)
    root = Path.cwd()
    notebooks = args.notebooks or sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        parser.error("no notebooks found: run from the repository root or name them.")
    out = args.out or root / "build" / args.edition
    kept = []
    if args.edition == "student" and not args.force:
        kept = [p for p in notebooks if (out / p.name).exists() and has_learner_work(out / p.name)]
    try:
        written = build(args.edition, [p for p in notebooks if p not in kept], out, source_commit(root))
    except ValueError as err:
        parser.exit(1, f"error: {err}\n")
    print(f"{args.edition}: wrote {len(written)} file(s) to {os.path.relpath(out)}")
    for path in kept:
        print(f"kept {os.path.relpath(out / path.name)}: it holds your work (move it away, or rebuild with --force)")


if __name__ == "__main__":
    main()
