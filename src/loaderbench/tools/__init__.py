"""Command-line entry points only (``python -m loaderbench.tools.NAME``): the self-check, soak, spread, meter,
overhead, A/A job and history simulations, change-point figures, rank scaling and the one-command GPU check.
What they share with the shipped suite lives in :mod:`loaderbench.selfcheck`."""
