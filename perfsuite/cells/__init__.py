"""What a run measures: cells, profiles and selection (no torch import), and sharding."""
