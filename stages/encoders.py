"""The neural encoders of one sample, run as one stage: CLIP, and the lip, sync and speaker encoders when configured.

A job places this stage where it places its encoders (an actor pool: a GPU each, or the fused CPU workers), so
every model is loaded once per worker and the frames never travel further than the encoders. Each part keeps its
own name, clock (`t_<name>`) and reject reasons: the parts are ordinary stages run one after the other on the
batch, and a row one part rejects is passed over by the next.
"""

from __future__ import annotations

from typing import Sequence

from stages.base import Row, Stage


class EncoderStages(Stage):
    """Runs `parts` (stages) in order on every batch; the first is the visual encoder."""

    name = "encoders"

    def __init__(self, parts: Sequence[Stage]):
        super().__init__()
        self.parts = list(parts)

    def setup(self) -> None:
        for part in self.parts:
            part.setup()
            part._ready = True

    def process_batch(self, rows: list[Row]) -> None:
        for part in self.parts:
            part(rows)

    def __call__(self, rows):
        rows = super().__call__(rows)
        for r in rows:
            r.pop(f"t_{self.name}", None)   # the parts' clocks already hold this time; counting it twice would lie
        return rows
