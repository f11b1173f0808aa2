"""The benchmarks of the ddsa project (``ddsa-bench``): ops/, networks/, gpu/ and the harness."""
