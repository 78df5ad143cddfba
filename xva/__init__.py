"""Streaming XVA reader and writer (sans-IO)."""
