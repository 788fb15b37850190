"""Evaluation: judging reconstructions, results files, `evaluate` (leakage metrics), the HTML
report."""
