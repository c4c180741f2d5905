"""``loaderbench tune --ranks N``: workers per rank when N data-parallel ranks share this machine's cores.

Each measurement of the search then runs in N ranks started by ``torch.distributed.run``
(:func:`loaderbench.ranks.launch.launch`), all stepping in lockstep, so the rate the search maximises is the
job's (the sum over ranks) with every rank's workers contending for the same cores: the recommended
``num_workers`` is per rank, and the cores the ranks share are accounted for by measurement.  :func:`core_note`
says where ranks x workers over-subscribe the cores.
"""

from __future__ import annotations

from loaderbench.config_rules import loading_processes
from loaderbench.machine import affinity_cpus


def oversubscribed(ranks: int, workers: int, cpus: int) -> bool:
    """Whether ``ranks`` ranks of ``workers`` workers each (or of their main process, without workers) want
    more cores than ``cpus``."""
    return loading_processes(ranks, workers) > cpus


def first_oversubscribed(ranks: int, cpus: int) -> int:
    """The smallest workers-per-rank count that over-subscribes ``cpus`` cores."""
    return cpus // ranks + 1


def core_note(ranks: int, workers: int, cpus: int | None = None) -> str:
    """One sentence on how ``ranks`` x ``workers`` per rank sit on this machine's cores."""
    cpus = cpus if cpus is not None else affinity_cpus()
    total = ranks * max(1, workers)
    what = f"{workers} worker(s) per rank" if workers else "no workers (each rank's main process loads)"
    limit = first_oversubscribed(ranks, cpus)
    line = (
        f"{ranks} ranks x {what} = {total} loading processes on {cpus} CPUs; from {limit} workers per rank "
        f"({ranks} x {limit} = {ranks * limit} > {cpus}) the ranks over-subscribe the cores"
    )
    if oversubscribed(ranks, workers, cpus):
        return (
            f"{line}, and this setting does: its workers time-share cores, so CPU-bound loading gains nothing from "
            "them (it was measured faster anyway, e.g. for loading that waits on I/O)."
        )
    return f"{line}; this setting does not."
