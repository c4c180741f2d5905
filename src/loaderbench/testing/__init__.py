"""What tests run on: the simulated GPU (a :class:`~loaderbench.cuda.ops.GpuOps` in real wall-clock time) and its
NVML, odd datasets as frozen specs, and hypothesis strategies for users' own tests
(:mod:`loaderbench.testing.strategies` needs the ``test`` extra)."""
