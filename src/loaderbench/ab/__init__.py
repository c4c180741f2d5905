"""The interleaved A/B: two interpreters compared in one job (``pytest --benchmark --loader-ab=BASE``,
``loaderbench ab BASE HEAD``).

* :mod:`~loaderbench.ab.paired`: the paired statistics on per-pair log ratios and the A/B verdict;
* :mod:`~loaderbench.ab.records`: the JSON-lines protocol between the scheduler and its child processes;
* :mod:`~loaderbench.ab.child`: the child entry point (``BASE -m loaderbench.ab.child SPEC RECORDS``);
* :mod:`~loaderbench.ab.process`: interpreter checks, the probe, children in their own process group;
* :mod:`~loaderbench.ab.schedule`: the ABBA schedule, the budget and the decisions;
* :mod:`~loaderbench.ab.render`: the terminal and Markdown output;
* :mod:`~loaderbench.pytest_plugin.ab_hooks`: the pytest integration;
* :mod:`~loaderbench.ab.command`: the ``loaderbench ab`` command's work.
"""
