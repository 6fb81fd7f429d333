"""perfsuite."""
