"""transferlab: the helper package behind the transfer-learning course.

Each module holds one concern; import from it directly, e.g.
``from transferlab.env import seed_everything``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
