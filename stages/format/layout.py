"""The output folder of a job: every path in it, and read-only views of what it holds.

    OUT/
      dataset.json          the feature contract (stages/format/contract.py)
      shards/JOB-UUUUUU.tar one WebDataset shard per unit of work
      index.parquet         one row per sample written: key, shard, task, dataset, split, ...
      rejects.parquet       one row per input row not written: clip_id, unit, stage, reason, detail
      report.json           counts, throughput, config, versions of the last run
      mixtures.parquet      synth-mix only: the planned recipes
      README.md             the dataset card: one Hugging Face `datasets` config per task (pipeline/card.py)
      wids-index.json       the shard list with sample counts, for random access with `wids`
      _work/                the resume ledger: plan-NNNNN.parquet, units/UUUUUU.{index,rejects}.parquet and
                            UUUUUU.done.json (written last), runs.jsonl; _work.lock beside it

`OutputDir` names the paths and reads them; nothing here creates or changes a file, so `pipeline status` and
`inspect` can look at a folder a job is writing. The job runner's `Ledger` (pipeline/jobs/ledger.py) writes the
`_work/` part through the same names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.errors import PipelineError


class NotAnOutput(PipelineError, FileNotFoundError):
    """A folder that holds no job output (or not the part asked for)."""


class SampleNotFound(PipelineError, KeyError):
    """No sample of that key in the output folder."""


class DamagedShard(PipelineError):
    """A shard that is missing, truncated or changed since its ledger entry was written."""


PLAN_SCHEMA = pa.schema([("clip_id", pa.string()), ("unit", pa.int64()), ("position", pa.int64())])


SHARDS = "shards"


def file_checksum(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (a shard never has to fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_problem(path: Path, size: Optional[int], sha256: Optional[str], *, checksum: bool) -> Optional[str]:
    """Why a shard is not the one its ledger entry recorded (missing, another size, another checksum), or None.
    The size is always compared (a stat); the checksum only with `checksum` (it reads the whole file)."""
    if not path.is_file():
        return "missing"
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, recorded {size}"
    if checksum and sha256 is not None and file_checksum(path) != sha256:
        return "checksum differs from the recorded one (the file was changed or damaged)"
    return None


def shard_entry(job: str, unit: int) -> str:
    """Where unit `unit` of job `job` is written, relative to the output folder (the index's `shard` column)."""
    return f"{SHARDS}/{job}-{unit:06d}.tar"


@dataclass(frozen=True)
class OutputDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    @property
    def index(self) -> Path:
        return self.root / "index.parquet"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def recipes(self) -> Path:
        return self.root / "mixtures.parquet"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def wids_index(self) -> Path:
        return self.root / "wids-index.json"

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @property
    def units(self) -> Path:
        return self.work / "units"

    @property
    def runs_log(self) -> Path:
        return self.work / "runs.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "_work.lock"

    def shard(self, relative: str) -> Path:
        """An index row's `shard` value (shards/NAME.tar) as a path; a value that leaves the folder is refused."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise NotAnOutput(f"{self.index}: shard {relative!r} lies outside {self.root}")
        return path

    def unit_file(self, unit: int, suffix: str) -> Path:
        return self.units / f"{unit:06d}.{suffix}"

    def plan_file(self, generation: int) -> Path:
        return self.work / f"plan-{generation:05d}.parquet"

    # -- reading ----------------------------------------------------------------------------------------
    def read_json(self, path: Path) -> Optional[dict[str, Any]]:
        return json.loads(path.read_text()) if path.is_file() else None

    def read_index(self, columns: Optional[Sequence[str]] = None) -> pa.Table:
        if not self.index.is_file():
            raise NotAnOutput(f"{self.index} not found: is {self.root} the output folder of a finished job?")
        return pq.read_table(self.index, columns=list(columns) if columns else None)

    def find(self, key: str, *, verify: bool = False) -> Path:
        """The shard holding sample `key`, from the index; SampleNotFound naming the folder when there is none.
        With `verify`, the shard's size and checksum must be the ones recorded when it was written."""
        index = self.read_index()
        match = index.filter(pc.equal(index["key"], key))
        if match.num_rows == 0:
            raise SampleNotFound(f"no sample {key!r} in {self.index} (see its 'key' column)")
        row = match.slice(0, 1).to_pylist()[0]
        path = self.shard(row["shard"])
        problem = shard_problem(path, row.get("shard_size"), row.get("shard_sha256"), checksum=verify)
        if problem:
            raise DamagedShard(f"shard {path} (holding {key}) is damaged: {problem}. Re-run the job that wrote "
                               f"{self.root} to redo it")
        return path

    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("*.tar"))

    # -- the ledger, read-only --------------------------------------------------------------------------
    def plan_files(self) -> list[Path]:
        return sorted(self.work.glob("plan-*.parquet"))

    def plan(self) -> pa.Table:
        files = self.plan_files()
        if not files:
            return PLAN_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=PLAN_SCHEMA) for f in files])

    def done_units(self) -> set[int]:
        return {int(p.name.split(".")[0]) for p in self.units.glob("*.done.json")}

    def unit_summaries(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.units.glob("*.done.json"))]

    def unit_tables(self, kind: str) -> Optional[pa.Table]:
        """Every finished unit's `index` or `rejects` table, concatenated in unit order (None when all are empty)."""
        files = [self.unit_file(u, f"{kind}.parquet") for u in sorted(self.done_units())]
        tables = [t for t in (pq.read_table(f) for f in files if f.is_file()) if t.num_rows]
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def damaged_units(self, *, checksum: bool = False) -> dict[int, str]:
        """Finished units whose shard is missing or differs from what their ledger entry recorded: {unit: why}."""
        damaged = {}
        for summary in self.unit_summaries():
            problem = self.shard_problem(summary, checksum=checksum)
            if problem:
                damaged[int(summary["unit"])] = f"{summary['shard']}: {problem}"
        return damaged

    def shard_problem(self, summary: dict[str, Any], *, checksum: bool) -> Optional[str]:
        return shard_problem(self.root / summary["shard"], summary.get("shard_size"), summary.get("shard_sha256"),
                             checksum=checksum)

    def runs(self) -> list[dict[str, Any]]:
        if not self.runs_log.is_file():
            return []
        return [json.loads(line) for line in self.runs_log.read_text().splitlines() if line.strip()]
