# The two set-up commands of the README. Both set up what is missing first (scripts/setup.sh).
VENV ?= .venv

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/pipeline demo demo

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
