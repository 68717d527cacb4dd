"""A tqdm progress bar whose stored notebook output ends on the final state, not on 0 %.

``tqdm.auto`` shows a widget in Jupyter. The output it stores holds the widget's id plus a text
fallback written when the bar first appears (``epochs: 0%| | 0/5``). Wherever the widget cannot be
drawn (GitHub, nbviewer, a reopened notebook whose kernel no longer knows the widget), that stale
text is what the reader sees, as if training never ran. This bar displays itself with a
``display_id`` and, when it closes, updates that display: same widget, final text.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.notebook import tqdm_notebook as _notebook_tqdm

__all__ = ["tqdm"]

IN_NOTEBOOK = issubclass(_auto_tqdm, _notebook_tqdm)


class tqdm(_auto_tqdm):  # lower case: a drop-in replacement for tqdm.auto.tqdm
    """``tqdm.auto.tqdm``; in Jupyter, the stored output's text fallback shows the final state.

    Example:
        >>> from transferlab.progress import tqdm
        >>> total = sum(tqdm(range(3), disable=True))
    """

    container: Any  # tqdm.notebook's widget box (tqdm.auto gives the notebook class in Jupyter)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handle = None
        if not IN_NOTEBOOK:
            super().__init__(*args, **kwargs)
            return
        display_here = kwargs.pop("display", True)
        super().__init__(*args, display=False, **kwargs)  # tqdm would display without an id
        if display_here and not self.disable and self.delay <= 0:
            from IPython.display import display

            self._handle = display(self.container, display_id=True)
            self.displayed = True

    def close(self) -> None:
        """Close the bar, then rewrite its stored output: the widget plus the text of the final state."""
        super().close()
        handle, self._handle = self._handle, None
        if handle is None:
            return
        if getattr(self.container, "comm", None) is None:  # leave=False closed the widget: store no stale text
            handle.update({"text/plain": ""}, raw=True)
        else:  # the widget's own bundle (IPython's public display protocol, _repr_mimebundle_), the bar as text too
            handle.update({**self.container._repr_mimebundle_(), "text/plain": self.container.__repr__(True)}, raw=True)
