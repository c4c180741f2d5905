"""Workloads: named, seeded dataset recipes (simulated I/O-, CPU- and transfer-bound datasets, real JPEG decode)
read from the scenario file, with the spin calibration that makes their costs the same on any machine."""
