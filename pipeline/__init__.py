"""Orchestration of the VSSFlow pipeline; `pipeline.open_output(OUT)` reads a job's output (pipeline/api.py)."""

from pipeline.api import Output, Sample, open_output

__all__ = ["Output", "Sample", "open_output"]
