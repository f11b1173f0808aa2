"""The GPU run (``ddsa-bench gpu-run``): run.sh, its Python stages and the sanitizer cases."""
