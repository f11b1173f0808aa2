"""Command-line entry points (console scripts ``ddsa-train``, ``ddsa-synth``, ``ddsa-eval``,
``ddsa-derain``, ``ddsa-demo``; each also runs as ``python -m ddsa_model.cli.<name>``)."""
