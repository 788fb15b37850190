"""Workflows: `invert` (attack + judge + write a run directory), `demo`, the defense matrix."""
