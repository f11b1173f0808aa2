"""Whole-network benchmarks: the DDSA model, ddsa_kernels.patch on the three families, CPU memory."""
