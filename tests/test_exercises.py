"""The stub run (`make check-exercises`, its own CI step): each notebook's student edition, executed with errors
allowed, stops at every stub, and every self-check fails with its message, on the stub and on each deliberately
wrong answer stored with the solution (`metadata.transferlab.wrong_answers`). Slow: it runs every notebook once."""

import nbformat
import pytest

from transferlab.editions import execute, stub_run_problems, student_notebook, with_wrong_answers

from conftest import NOTEBOOKS

pytestmark = pytest.mark.exercises


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_self_check_fails_on_the_stub(path):
    student = with_wrong_answers(student_notebook(nbformat.read(path, as_version=4), "stub-run"))
    ran = execute(student, path.parent)
    problems = stub_run_problems(ran)
    assert not problems, f"{path.name}, student edition run:\n" + "\n".join(problems)
