"""The detector's own test: measured between processes (options, bench, trials), simulated at grid scale (grid)."""
