"""Executors: where a plan's work units run (threads in this process; other plugins add clusters)."""
