"""Multi-rank input pipelines: a case run in N ranks started by ``torch.distributed.run`` (torchrun's engine).

* :mod:`~loaderbench.ranks.launch` starts the ranks for one case, bounds them in time, kills whatever is left
  and turns a failed rank into one :class:`~loaderbench.errors.CaseFailed` paragraph naming the rank;
* :mod:`~loaderbench.ranks.rank_main` is what each rank runs: it joins the process group (gloo on CPU, NCCL on
  CUDA), measures the case with the harness over a ``DistributedSampler`` and gathers to rank 0;
* :mod:`~loaderbench.ranks.sync` is the per-step collective (a DDP-like synchronous step);
* :mod:`~loaderbench.ranks.combine` turns the per-rank measurements into the job's one measurement;
* :mod:`~loaderbench.ranks.coverage` checks that the ranks read disjoint samples.
"""
