"""Measuring one case honestly: the harness (:func:`~loaderbench.engine.harness.measure`), the case and its
consumer, the plan that sizes the rounds, the watchdog, fault explanation, cleanup of worker processes and
shared memory, peak memory, and the control case (how fast the machine is right now)."""
