#!/usr/bin/env bash
# Set up the project on a fresh machine: system tools (when root), a virtual environment in .venv,
# and the project installed in it with its test extras. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# ffmpeg encodes the sample corpus, espeak-ng speaks it. Without root, the Python wheels
# (imageio-ffmpeg, espeakng-loader) stand in for both.
if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg espeak-ng >/dev/null
  else
    echo "setup: ffmpeg/espeak-ng not found and not root; using the ffmpeg and espeak-ng libraries from wheels" >&2
  fi
fi

stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
echo "setup: ready ($VENV)"
