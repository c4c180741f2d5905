"""Case selection: which cases a run covers (tiers, an explicit config, CUDA cases, ranks) and where each one
runs (the harness in this process, or the ranks launcher); above the engine and the ranks launcher."""
