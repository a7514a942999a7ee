"""Figures and tables rebuilt from result files only (`python -m figures [DIR ...]`)."""
