"""The suite's own benchmark cases, shipped in the package so an installed loaderbench runs its tiers anywhere::

    pytest --benchmark --pyargs loaderbench.suite

Their scenario and noise-prior files are :mod:`loaderbench.data`'s.
"""
