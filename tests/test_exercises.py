"""The stub run (`make check-exercises`, its own CI step): each notebook's student edition, executed with errors
allowed, stops at every stub, and every self-check fails with its message. Slow: it runs every notebook once."""

import nbformat
import pytest

from transferlab.editions import execute, stub_run_problems, student_notebook

from conftest import NOTEBOOKS

pytestmark = pytest.mark.exercises


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_self_check_fails_on_the_stub(path):
    ran = execute(student_notebook(nbformat.read(path, as_version=4), "stub-run"), path.parent)
    problems = stub_run_problems(ran)
    assert not problems, f"{path.name}, student edition run:\n" + "\n".join(problems)
