"""Tabular simulator of Algorithm 1 (Eq. 3.1-3.7): instances, data, estimators, policies, sweeps."""

METHODS = ("shared", "local", "full", "global", "nuclear")
