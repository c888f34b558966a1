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
`_work/` part through the same names. The root is a local folder or an object-storage URL (`s3://bucket/prefix`):
every path of the output is made here and read through `manifests.storage`, the one filesystem layer.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import storage
from manifests.errors import PipelineError
from manifests.storage import Location


class NotAnOutput(PipelineError, FileNotFoundError):
    """A folder that holds no job output (or not the part asked for)."""


class SampleNotFound(PipelineError, KeyError):
    """No sample of that key in the output folder."""


class DamagedShard(PipelineError):
    """A shard that is missing, truncated or changed since its ledger entry was written."""


PLAN_SCHEMA = pa.schema([("clip_id", pa.string()), ("unit", pa.int64()), ("position", pa.int64())])


SHARDS = "shards"


def file_checksum(path: Location) -> str:
    """sha256 of a file (local or on object storage), read in 1 MiB blocks."""
    return storage.checksum(path)


def shard_problem(path: Location, size: Optional[int], sha256: Optional[str], *, checksum: bool) -> Optional[str]:
    """Why a shard is not the one its ledger entry recorded (missing, another size, another checksum), or None.
    The size is always compared (a stat); the checksum only with `checksum` (it reads the whole file)."""
    found = storage.size(path)
    if found is None:
        return "missing"
    if size is not None and found != size:
        return f"size {found} bytes, recorded {size}"
    if checksum and sha256 is not None and file_checksum(path) != sha256:
        return "checksum differs from the recorded one (the file was changed or damaged)"
    return None


def shard_entry(job: str, unit: int) -> str:
    """Where unit `unit` of job `job` is written, relative to the output folder (the index's `shard` column)."""
    return f"{SHARDS}/{job}-{unit:06d}.tar"


def read_table(location: Location, columns: Optional[Sequence[str]] = None, schema=None) -> pa.Table:
    """A Parquet file, local or on object storage."""
    source = location if not storage.is_url(location) else io.BytesIO(storage.read_bytes(location))
    return pq.read_table(source, columns=list(columns) if columns else None, schema=schema)


@dataclass(frozen=True)
class OutputDir:
    root: Union[Path, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.as_location(self.root))

    @property
    def remote(self) -> bool:
        """True for an output on object storage."""
        return storage.is_url(self.root)

    def at(self, *parts: str) -> Location:
        return storage.join(self.root, *parts)

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def dataset_json(self) -> Location:
        return self.at("dataset.json")

    @property
    def shards(self) -> Location:
        return self.at(SHARDS)

    @property
    def index(self) -> Location:
        return self.at("index.parquet")

    @property
    def rejects(self) -> Location:
        return self.at("rejects.parquet")

    @property
    def report(self) -> Location:
        return self.at("report.json")

    @property
    def recipes(self) -> Location:
        return self.at("mixtures.parquet")

    @property
    def card(self) -> Location:
        return self.at("README.md")

    @property
    def wids_index(self) -> Location:
        return self.at("wids-index.json")

    @property
    def work(self) -> Location:
        return self.at("_work")

    @property
    def units(self) -> Location:
        return self.at("_work", "units")

    @property
    def runs_log(self) -> Location:
        return self.at("_work", "runs.jsonl")

    @property
    def lock(self) -> Location:
        """Local outputs: the flock file. Object storage: the lease object (pipeline/jobs/lease.py)."""
        return self.at("_work.lease" if self.remote else "_work.lock")

    def shard(self, relative: str) -> Location:
        """An index row's `shard` value (shards/NAME.tar) as a location; a value that leaves the folder is refused."""
        path = storage.within(self.root, relative)
        if path is None:
            raise NotAnOutput(f"{self.index}: shard {relative!r} lies outside {self.root}")
        return path

    def unit_file(self, unit: int, suffix: str) -> Location:
        return self.at("_work", "units", f"{unit:06d}.{suffix}")

    def plan_file(self, generation: int) -> Location:
        return self.at("_work", f"plan-{generation:05d}.parquet")

    # -- reading ----------------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the folder holds anything of a job (its dataset.json or ledger)."""
        return storage.exists(self.dataset_json) or bool(self.plan_files())

    def read_json(self, path: Location) -> Optional[dict[str, Any]]:
        return json.loads(storage.read_bytes(path)) if storage.exists(path) else None

    def read_index(self, columns: Optional[Sequence[str]] = None) -> pa.Table:
        if not storage.exists(self.index):
            raise NotAnOutput(f"{self.index} not found: is {self.root} the output folder of a finished job?")
        return read_table(self.index, columns)

    def find(self, key: str, *, verify: bool = False) -> Location:
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

    def shard_files(self) -> list[Location]:
        return storage.listdir(self.shards, ".tar")

    # -- the ledger, read-only --------------------------------------------------------------------------
    def plan_files(self) -> list[Location]:
        return [p for p in storage.listdir(self.work, ".parquet") if _name(p).startswith("plan-")]

    def plan(self) -> pa.Table:
        files = self.plan_files()
        if not files:
            return PLAN_SCHEMA.empty_table()
        return pa.concat_tables([read_table(f, schema=PLAN_SCHEMA) for f in files])

    def done_units(self) -> set[int]:
        return {int(_name(p).split(".")[0]) for p in storage.listdir(self.units, ".done.json")}

    def unit_summaries(self) -> list[dict[str, Any]]:
        return [json.loads(storage.read_bytes(p)) for p in storage.listdir(self.units, ".done.json")]

    def unit_tables(self, kind: str) -> Optional[pa.Table]:
        """Every finished unit's `index` or `rejects` table, concatenated in unit order (None when all are empty)."""
        files = [self.unit_file(u, f"{kind}.parquet") for u in sorted(self.done_units())]
        tables = [t for t in (read_table(f) for f in files if storage.exists(f)) if t.num_rows]
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
        return shard_problem(self.at(summary["shard"]), summary.get("shard_size"), summary.get("shard_sha256"),
                             checksum=checksum)

    def runs(self) -> list[dict[str, Any]]:
        if not storage.exists(self.runs_log):
            return []
        text = storage.read_bytes(self.runs_log).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _name(location: Location) -> str:
    return str(location).rsplit("/", 1)[-1]
