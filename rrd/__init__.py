"""Numpy round-robin databases and their rrdtool-style renderers (no I/O framework)."""
