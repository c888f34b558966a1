"""The four tasks of VSSFlow and what each one carries: the only definition of these sets.

v2s         video -> environmental sound (no transcript)
visual_tts  talking-face video + transcript -> speech
tts         transcript -> speech (no video)
joint       video + transcript -> sound and speech together (real joint clips and synthetic mixtures)
"""

from __future__ import annotations

TASKS = ("v2s", "visual_tts", "tts", "joint")
SPEECH_TASKS = frozenset({"visual_tts", "tts", "joint"})   # carry a transcript and phonemes
VIDEO_TASKS = frozenset({"v2s", "visual_tts", "joint"})    # carry a video
SPEECH_SOURCE_TASKS = ("visual_tts", "tts")                # what synth-mix lays over sound
SOUND_SOURCE_TASKS = ("v2s",)                              # what synth-mix lays speech over
