"""Verdicts: the statistics, which baseline gates a run, per-cell verdicts, and how they are rendered."""
