"""The course's own machinery, for teachers and maintainers: not part of the learner's package.

- :mod:`coursetools.editions`: student, clean and handout editions of the notebooks, the exercise-format check and
  the stub run (``python -m coursetools.editions student|clean|handouts``; ``make student``).

It is not installed with ``transferlab``: run it from the repository root, where ``make`` and pytest find it. It
needs the ``[course]`` extra (nbformat, nbconvert).
"""
