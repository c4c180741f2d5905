"""The pytest plugin: options, collection and ordering of the cases, the ``loader_benchmark`` fixture, the
session that measures, records and gates, the A/B hooks, and the run's exit code."""
