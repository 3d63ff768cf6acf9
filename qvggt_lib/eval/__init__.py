"""Evaluation: metrics on rendered test scenes and fidelity to a reference model (evaluate.py), tables (tables.py)."""
