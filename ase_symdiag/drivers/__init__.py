"""Drivers: evaluate a model on structures, then compute metrics of the samples.

One layer above ``backends/`` (which evaluate) and ``metrics/`` (which measure); the
command line and the library's entry points call them.
"""
