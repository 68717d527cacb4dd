"""Student, clean and handout editions, on a fixture notebook in the course's exercise format and on the course."""

import copy
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursetools.editions import (
    BEGIN,
    END,
    build,
    clean_notebook,
    edition_of,
    execute,
    exercise_cells,
    format_problems,
    handout_html,
    has_learner_work,
    main,
    stub_run_problems,
    stub_solutions,
    student_notebook,
    with_wrong_answers,
)

from conftest import NOTEBOOKS

PNG_CELL = """from io import BytesIO
from IPython.display import Image, display
from PIL import Image as PILImage
buffer = BytesIO()
PILImage.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format="PNG")
display(Image(buffer.getvalue()))"""


def fixture_notebook() -> nbformat.NotebookNode:
    """A two-exercise notebook in the course's format, with an image, a map link and a questionnaire."""

    def code(source, *tags):
        cell = new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        return cell

    answers = new_markdown_cell("<details><summary>Answers</summary>\n\n1. Nine.\n</details>")
    answers.metadata["jupyter"] = {"source_hidden": True}
    nb = new_notebook(
        cells=[
            new_markdown_cell("# 99 · Fixture\n\nWhat you will learn: squares. Prerequisites: none. Run time: 1 s."),
            code("base = 3\nprint('lesson output', base)"),
            new_markdown_cell(
                "## 1. A picture\n\nProse that the clean edition drops. Next: [the map](00_start_here.ipynb)"
                " and [the code](../coursetools/editions.py)."
            ),
            code(PNG_CELL),
            new_markdown_cell("## Exercises\n\n**Exercise 1.** Square `base`."),
            code(
                f"square = None  # your answer goes here\n{BEGIN}\nsquare = base ** 2  # SECRET-ONE\n{END}\n"
                "print('square is', square)",
                "solution",
            ),
            code(
                'assert square is not None, "Exercise 1: set square in the cell above."\n'
                'assert square == base * base, f"Exercise 1: expected {base * base}, found {square}."',
                "self-check",
            ),
            new_markdown_cell("**Exercise 2. Even numbers.** List the first three."),  # the titled variant
            code(
                f"evens = None\nif True:\n    {BEGIN}\n    evens = [2 * i for i in range(3)]  # SECRET-TWO\n    {END}",
                "solution",
            ),
            code(
                'assert evens is not None, "Exercise 2: set evens in the cell above."\n'
                'assert evens == [0, 2, 4], f"Exercise 2: expected [0, 2, 4], found {evens}."',
                "self-check",
            ),
            new_markdown_cell("## Questionnaire\n\n1. What is three squared?"),
            answers,
            new_markdown_cell("## Further reading\n\n- A book."),
        ]
    )
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The fixture notebook as it would be committed: executed top to bottom."""
    ran = execute(fixture_notebook(), tmp_path_factory.mktemp("nb"))
    assert not [o for c in ran.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    return ran


def test_stub_replaces_every_block_and_keeps_placeholders_and_indentation():
    source = f"x = None\n{BEGIN}\nx = 1\n{END}\nprint(x)\nif True:\n    {BEGIN}\n    y = 2\n    {END}"
    assert stub_solutions(source) == (
        "x = None\n# YOUR CODE HERE\nraise NotImplementedError()\nprint(x)\n"
        "if True:\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )


@pytest.mark.parametrize(
    "source, problem",
    [
        ("x = 1", "no '### BEGIN SOLUTION'"),
        (f"{BEGIN}\nx = 1", "never closed"),
        (f"x = 1\n{END}", "without a"),
        (f"{BEGIN}\n{BEGIN}\n{END}", "inside a solution block"),
    ],
)
def test_stub_rejects_broken_markers(source, problem):
    with pytest.raises(ValueError, match=problem):
        stub_solutions(source)


def test_exercise_cells_need_a_self_check_after_each_solution():
    nb = fixture_notebook()
    assert exercise_cells(nb) == [(5, 6), (8, 9)]
    nb.cells[6].metadata["tags"] = []
    with pytest.raises(ValueError, match=r"cell 6: .* must be tagged 'self-check'"):
        exercise_cells(nb)


def test_format_check_accepts_the_course_format():
    assert format_problems(fixture_notebook()) == []


def _broken(change):
    nb = fixture_notebook()
    change(nb.cells)
    return format_problems(nb)


def test_format_check_names_what_is_broken():
    assert _broken(lambda c: c[8].metadata.update(tags=[])) == [
        "1 coding exercise(s) (cells tagged 'solution'); the course asks for at least 2",
        "cells [9] are tagged 'self-check' but follow no 'solution' cell",
    ]
    assert _broken(lambda c: c[5].update(source="square = 9")) == [
        "cell 5: no '### BEGIN SOLUTION' ... '### END SOLUTION' block; wrap the reference solution in the markers."
    ]
    assert _broken(lambda c: c[7].update(source="Exercise 2: evens.")) == [
        "cell 8: no '**Exercise N.** ...' markdown prompt above this solution cell"
    ]
    assert _broken(lambda c: c[7].update(source="**Exercise 3.** evens")) == [
        "exercises are numbered [1, 3]; expected 1, 2, ... in order"
    ]
    assert _broken(lambda c: c[6].update(source="assert square is not None\nprint('ok')")) == [
        "cell 6: assert(s) on line(s) [1] need a message saying what was expected and what was found"
    ]
    assert _broken(lambda c: c[9].update(source="print(evens)")) == [
        "cell 9: a self-check must assert on the learner's results"
    ]
    assert _broken(lambda c: c.insert(7, c[6].copy())) == [
        "cells [7] are tagged 'self-check' but follow no 'solution' cell"
    ]
    assert _broken(lambda c: c.insert(6, new_code_cell("pass"))) == [
        "cell 6: the cell after a 'solution' cell must be tagged 'self-check'."
    ]


def test_student_edition_has_no_solution_text_and_keeps_the_lesson(executed):
    student = student_notebook(executed, "abc1234")
    nbformat.validate(student)
    text = nbformat.writes(student)
    assert "SECRET-ONE" not in text and "SECRET-TWO" not in text and BEGIN not in text
    assert edition_of(student) == "student"
    assert "Student edition of transferlab commit `abc1234`" in student.cells[0].source
    assert student.cells[0].source.startswith("# 99 · Fixture")
    assert student.cells[5].source.startswith("square = None  # your answer goes here\n# YOUR CODE HERE\n")
    assert student.cells[8].source.endswith("    # YOUR CODE HERE\n    raise NotImplementedError()")
    for i in (5, 6, 8, 9):  # exercise outputs cleared
        assert student.cells[i].outputs == [] and student.cells[i].execution_count is None
    for i in (1, 3):  # lesson outputs kept
        assert student.cells[i].outputs == executed.cells[i].outputs and student.cells[i].outputs
    assert executed.cells[5].outputs, "the original is not modified"


def test_student_edition_run_fails_each_self_check_with_its_message(executed, tmp_path):
    ran = execute(student_notebook(executed, "abc1234"), tmp_path)
    assert stub_run_problems(ran) == []
    errors = {
        i: c.outputs[-1]
        for i, c in enumerate(ran.cells)
        if c.cell_type == "code" and c.outputs and c.outputs[-1].output_type == "error"
    }
    assert sorted(errors) == [5, 6, 8, 9]
    assert errors[6].ename == "AssertionError" and errors[6].evalue == "Exercise 1: set square in the cell above."
    assert errors[9].evalue == "Exercise 2: set evens in the cell above."
    assert errors[5].ename == errors[8].ename == "NotImplementedError"


def test_stub_run_problems_names_a_self_check_that_does_not_assert(executed):
    ran = student_notebook(executed, "abc1234")  # hand-made outputs: no kernel needed

    def error(ename, evalue):
        return [nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])]

    ran.cells[5].outputs = ran.cells[8].outputs = error("NotImplementedError", "")
    ran.cells[6].outputs = error("AssertionError", "Exercise 1: ...")
    ran.cells[9].outputs = error("NameError", "name 'x' is not defined")
    ran.cells[1].outputs = error("ValueError", "boom")
    assert stub_run_problems(ran) == [
        "cell 1: ValueError: boom (only solution and self-check cells may fail on the stub)",
        "cell 9 (self-check): expected an AssertionError with a message, found NameError: name 'x' is not defined",
    ]
    ran.cells[6].outputs = []  # a self-check that passes on the stub
    assert "cell 6 (self-check): expected an AssertionError with a message, found no error" in stub_run_problems(ran)


def test_wrong_answers_run_after_the_stub_and_their_self_checks_must_fail(executed, tmp_path):
    nb = copy.deepcopy(executed)
    # Exercise 1: a constant the self-check rejects, and a wrong answer it lets through (the negative control)
    nb.cells[5].metadata["transferlab"] = {"wrong_answers": ["square = 0", "square = base * base"]}
    student = with_wrong_answers(student_notebook(nb, "abc1234"))
    tags = [c.metadata.get("tags", []) for c in student.cells[7:11]]
    assert tags == [["wrong-answer"], ["wrong-answer-check"], ["wrong-answer"], ["wrong-answer-check"]], tags
    problems = stub_run_problems(execute(student, tmp_path))
    assert problems == [
        "cell 10 (self-check after a wrong answer): expected an AssertionError with a message, "
        "found no error: the self-check passes a wrong answer"
    ], problems
    nb.cells[5].metadata["transferlab"] = {"wrong_answers": ["square = (("]}
    assert any("wrong answer in its metadata is not valid" in p for p in format_problems(nb))


def test_make_student_keeps_a_learners_work(executed, tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    nbformat.write(executed, tmp_path / "notebooks" / "99_fixture.ipynb")
    monkeypatch.chdir(tmp_path)
    main(["student"])
    target = tmp_path / "build" / "student" / "99_fixture.ipynb"
    assert "commit `unknown (not a git checkout)`" in target.read_text() and not has_learner_work(target)
    worked = nbformat.read(target, as_version=4)
    worked.cells[5].source = "square = None\nsquare = base ** 2"
    nbformat.write(worked, target)
    assert has_learner_work(target)
    main(["student"])
    assert "kept build/student/99_fixture.ipynb: it holds your work" in capsys.readouterr().out
    assert nbformat.read(target, as_version=4).cells[5].source == "square = None\nsquare = base ** 2"
    main(["student", "--force"])
    assert not has_learner_work(target)


def test_clean_edition_keeps_headings_code_and_questions_only(executed):
    clean = clean_notebook(executed, "abc1234")
    nbformat.validate(clean)
    code = [c for c in clean.cells if c.cell_type == "code"]
    assert [c.source for c in code] == [c.source for c in executed.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    markdown = [c.source for c in clean.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("# 99 · Fixture\n\n*Clean edition of transferlab commit `abc1234`")
    assert markdown[1:] == [
        "## 1. A picture",
        "## Exercises",
        "## Questionnaire\n\n1. What is three squared?",
        "## Further reading",
    ]
    assert edition_of(clean) == "clean"


def test_handout_is_self_contained_with_images_and_links(executed, tmp_path):
    notebook_dir, out_dir = tmp_path / "notebooks", tmp_path / "build" / "handouts"
    html = handout_html(executed, notebook_dir, out_dir)
    assert re.search(r'<img[^>]* src="data:image/png;base64,[A-Za-z0-9+/=\s]{40,}"', html)
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"https?:|<img[^>]+src=\"(?!data:)", html)
    assert 'href="00_start_here.html"' in html
    assert 'href="../../coursetools/editions.py"' in html  # still reaches the file from build/handouts/
    assert "lesson output 3" in html and "99 · Fixture" in html


def test_handout_refuses_an_unexecuted_notebook(tmp_path):
    with pytest.raises(ValueError, match="never executed"):
        handout_html(fixture_notebook(), tmp_path, tmp_path)


def test_handouts_of_the_course_link_to_each_other(tmp_path):
    written = build("handouts", NOTEBOOKS[:1], tmp_path, "abc1234")
    html = written[0].read_text()
    targets = set(re.findall(r'href="(\d\d_[^"#]+)\.html', html))
    stems = {p.stem for p in NOTEBOOKS}
    assert targets and targets <= stems, f"course map links to {sorted(targets - stems)} which has no notebook"
    assert ".ipynb" not in "".join(re.findall(r'href="([^"]+)"', html))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_and_clean_editions_of_the_course_build(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    (student,) = build("student", [path], tmp_path / "student", "abc1234")
    (clean,) = build("clean", [path], tmp_path / "clean", "abc1234")
    student_nb = nbformat.read(student, as_version=4)
    nbformat.validate(student_nb)
    nbformat.validate(nbformat.read(clean, as_version=4))
    for solution, _ in exercise_cells(nb):
        blocks = re.findall(f"{BEGIN}(.*?){END}", nb.cells[solution].source, flags=re.S)
        stub = student_nb.cells[solution].source.splitlines()
        leaked = [line for block in blocks for line in block.splitlines() if line.strip() and line in stub]
        assert not leaked, f"{path.name}, cell {solution}: solution lines in the student edition: {leaked}"


@pytest.mark.parametrize("edition", ["student", "clean"])
def test_editions_carry_the_scripts_the_notebooks_run(edition, tmp_path):
    scripts = sorted(p.name for p in NOTEBOOKS[0].parent.glob("*.py"))
    assert "ddp_finetune.py" in scripts  # notebook 11 launches it from its own folder
    build(edition, NOTEBOOKS[-1:], tmp_path, "abc1234")
    assert sorted(p.name for p in tmp_path.glob("*.py")) == scripts
    for name in scripts:
        assert (tmp_path / name).read_bytes() == (NOTEBOOKS[0].parent / name).read_bytes()
    assert not build("handouts", NOTEBOOKS[:1], tmp_path / "handouts", "abc1234")[0].name.endswith(".py")
    assert not list((tmp_path / "handouts").glob("*.py"))
