"""`pipeline run evaluate`: generated audio measured against reference clips (metrics, references, models, run)."""
