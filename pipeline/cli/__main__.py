"""`python -m pipeline.cli ...`: the `pipeline` command (the entrypoint of submitted Ray jobs)."""

from pipeline.cli.app import main

main()
