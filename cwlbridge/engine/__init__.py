"""Execution engine: scheduler, run state, progress and reports."""
