"""One benchmark per fused op of ddsa_kernels (``ddsa-bench op``, ``op-cpu``, ``channel-norm``, ...)."""
