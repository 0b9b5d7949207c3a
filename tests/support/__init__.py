"""Helpers shared by tests and bench scripts: free ports, readiness polls, real processes."""
