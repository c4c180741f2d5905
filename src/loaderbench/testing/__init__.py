"""Helpers for users' own tests: :mod:`loaderbench.testing.strategies` (hypothesis strategies for odd
datasets and valid ``LoaderConfig``s; it needs the ``test`` extra)."""
