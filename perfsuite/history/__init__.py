"""Nightly history: every run kept in a store, change points found per cell and traced to commits, trends drawn.

One module per step: :mod:`~perfsuite.history.store` (the SQLite store), :mod:`~perfsuite.history.changepoints`
(the search on one series), :mod:`~perfsuite.history.looks` (one night's look at a series: what is shown, what
is filed), :mod:`~perfsuite.history.changes` (the store's change points and their commit ranges),
:mod:`~perfsuite.history.trends` (figures and page), :mod:`~perfsuite.history.synthetic` (simulated histories for
tests and measurements). The names below are the whole API.
"""

from perfsuite.history.changepoints import Detection, Step, detect
from perfsuite.history.changes import ChangePoint, SeriesChanges, changes_document, find_changes
from perfsuite.history.looks import Filing, Look, decide, look
from perfsuite.history.store import HistoryError, HistoryStore, add_files, open_store

__all__ = ["ChangePoint", "Detection", "Filing", "HistoryError", "HistoryStore", "Look", "SeriesChanges", "Step",
           "add_files", "changes_document", "decide", "detect", "find_changes", "look", "open_store"]
