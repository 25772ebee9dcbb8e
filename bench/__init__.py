"""Benchmarks of dnd-service (run as scripts: see bench/README.md)."""
