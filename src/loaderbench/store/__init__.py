"""Stored files: baselines (one per hardware key), ``results.json``, the environment compared across runs and the
machine fingerprint that names a baseline, written so that a crash never corrupts one."""
