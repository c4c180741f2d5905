"""The names the pytest plugin registers, kept below both users of them: the plugin, and the A/B, which finds
the tests of a user's repository that take the fixture."""

#: The fixture a user's own benchmark test takes (:mod:`loaderbench.pytest_plugin.fixture`).
FIXTURE = "loader_benchmark"
#: The fixture the suite's own cases are parametrized over (one Case per test item).
CASE_FIXTURE = "loaderbench_case"
