"""The stub run (`make check-exercises`, its own CI step): each notebook's student edition, written to a folder of its
own as `make student` writes build/student, executed there with errors allowed, stops at every stub, and every
self-check fails with its message, on the stub and on each deliberately wrong answer stored with the solution
(`metadata.transferlab.wrong_answers`). Slow: it runs every notebook once."""

import nbformat
import pytest

from coursetools.editions import build, execute, stub_run_problems, with_wrong_answers

from conftest import NOTEBOOKS

pytestmark = pytest.mark.exercises

# Longest first, so that the two xdist workers finish together (in course order the two longest came last and one
# worker ran on alone). The notebooks' measured times are in the README's "Measured figures".
LONGEST = ("12", "05", "13", "11", "04")
ORDER = sorted(NOTEBOOKS, key=lambda p: (LONGEST.index(p.name[:2]) if p.name[:2] in LONGEST else len(LONGEST), p.name))


@pytest.mark.parametrize("path", ORDER, ids=lambda p: p.name)
def test_every_self_check_fails_on_the_stub(path, tmp_path):
    (written,) = build("student", [path], tmp_path / "student", commit="stub-run")
    student = with_wrong_answers(nbformat.read(written, as_version=4))
    ran = execute(student, written.parent)  # run from the edition's own folder, not from notebooks/
    problems = stub_run_problems(ran)
    assert not problems, f"{path.name}, student edition run:\n" + "\n".join(problems)
