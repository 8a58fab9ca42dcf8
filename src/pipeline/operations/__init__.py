"""Operator actions: replay and discard dead letters, rerun documents, background jobs."""
