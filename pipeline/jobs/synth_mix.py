"""`pipeline run synth-mix`: extract outputs (speech + sound) -> mixture shards, as a Ray Data pipeline.

The recipes are the job's input rows: sampled once on the driver (seeded per mixture) and kept in
OUT/mixtures.parquet, so a re-run, a resume after kill -9 or a larger --count reuses exactly the same
recipes and only renders what is missing. Rendering runs in an actor pool (shard indexes and mel
filters built once per worker); VAE latents, when the sources have them, are re-derived from the mixed mel.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from manifests import storage
from manifests.errors import UsageError
from manifests.storage import Location
from manifests.tasks import SOUND_SOURCE_TASKS, SPEECH_SOURCE_TASKS
from pipeline.jobs.ledger import write_table
from pipeline.jobs.runner import JobSpec, RunOptions, check_job_sizes, dry_run, open_output, output_lock, run_locked
from stages.audio import LoudnessConfig
from stages.base import Row
from stages.format.contract import (
    STREAM_ROW_KEYS,
    ContractError,
    FeatureContract,
    read_dataset_json,
    require_same,
)
from stages.format.layout import OutputDir, read_table
from stages.mix import MixConfig, MixStage, pick_sources, sample_recipe

JOB = "synth-mix"


# Sound labels that are voices: a sound source labelled so would put a second voice under the mixture's speech.
# Globs matched case-insensitively against the label (VGGSound's "male speech, man speaking", "female singing",
# "people whispering", ...); an unlabelled source matches none of them.
VOICE_LABELS = ["*speech*", "*speaking*", "*singing*", "*choir*", "*whispering*", "*babbling*", "*rapping*",
                "*yodel*", "*beatbox*", "*narrat*", "*vocal*"]


@dataclass(frozen=True, kw_only=True)
class SourceFilter:
    datasets: Optional[list] = None
    splits: Optional[list] = None
    speakers: Optional[list] = None
    min_seconds: Optional[float] = None
    max_seconds: Optional[float] = None
    labels: Optional[list] = None          # keep only sources whose label matches one of these globs
    # drop sources whose label matches one of these globs; by default the voice classes ([] keeps every label)
    exclude_labels: Optional[list] = field(default_factory=lambda: list(VOICE_LABELS))


def label_mask(labels: list, include: Optional[list], exclude: Optional[list]) -> list[bool]:
    """Which labels pass: matching an include glob (when there are any) and no exclude glob; case-insensitive.
    A null label passes only when there is no include list."""
    def matches(label, globs):
        return any(fnmatch.fnmatchcase(label.lower(), g.lower()) for g in globs)

    return [(not include or (label is not None and matches(label, include)))
            and not (exclude and label is not None and matches(label, exclude)) for label in labels]


@dataclass(frozen=True, kw_only=True)
class SynthMixConfig:
    mix: MixConfig = field(default_factory=MixConfig)
    count: int = 1000
    seed: int = 0
    speech: SourceFilter = field(default_factory=SourceFilter)
    sound: SourceFilter = field(default_factory=SourceFilter)
    shard_size: int = 256
    rows_per_task: int = 8
    cpu_stage_cpus: float = 1.0
    cpu_workers: Optional[int] = None
    vae_dir: Optional[str] = None   # where the sources' VAE lives now (default: the path in their dataset.json)

    def __post_init__(self) -> None:
        check_job_sizes(self)
        if self.count < 1:
            raise ValueError(f"count must be >= 1 (mixtures to make), got {self.count}")


def resolve_sources(paths: Sequence[Location]) -> dict[Location, Optional[set]]:
    """Output folders or single shards (OUT/shards/NAME.tar), local or URLs -> {output folder: shard names or
    None for all}."""
    sources: dict[Location, Optional[set]] = {}
    for p in (storage.as_location(str(p)) for p in paths):
        name = str(p).rsplit("/", 1)[-1]
        if name.endswith(".tar"):
            if not storage.exists(p):
                raise UsageError(f"shard {p} not found")
            folder = str(p).rsplit("/", 2)[0] if storage.is_url(p) else Path(p).resolve().parent.parent
            if sources.get(folder, set()) is not None:
                sources.setdefault(folder, set()).add(f"shards/{name}")
        else:
            sources[p if storage.is_url(p) else Path(p).resolve()] = None
    return sources


def source_contract(dirs: Sequence[Location]) -> FeatureContract:
    """The one feature contract all sources share; mixing two contracts is refused before any work."""
    contracts = []
    for d in dirs:
        contract, doc = read_dataset_json(d)
        if doc["job"] != "extract":
            raise ContractError(f"{d} is a {doc['job']} output; synth-mix reads extract outputs")
        contracts.append((f"source {d}", contract))
    return require_same(contracts, "Mix only outputs of one feature contract.")


def source_pool(sources: dict[Location, Optional[set]], tasks: Sequence[str], filt: SourceFilter, *,
                drop_silent: bool) -> pa.Table:
    """Index rows usable as sources, with absolute shard paths, in a stable order."""
    tables = []
    for d, shards in sources.items():
        folder = OutputDir(d)
        index = folder.read_index()
        if index.num_rows == 0:
            continue
        if shards is not None:
            index = index.filter(pc.is_in(index["shard"], value_set=pa.array(sorted(shards))))
        index = index.filter(pc.is_in(index["task"], value_set=pa.array(list(tasks))))
        for column, allowed in (("dataset", filt.datasets), ("split", filt.splits), ("speaker", filt.speakers)):
            if allowed:
                index = index.filter(pc.is_in(index[column], value_set=pa.array(list(allowed))))
        if filt.min_seconds is not None:
            index = index.filter(pc.greater_equal(index["duration_s"], filt.min_seconds))
        if filt.max_seconds is not None:
            index = index.filter(pc.less_equal(index["duration_s"], filt.max_seconds))
        if filt.labels or filt.exclude_labels:
            labels = index["label"].to_pylist() if "label" in index.column_names else [None] * index.num_rows
            index = index.filter(pa.array(label_mask(labels, filt.labels, filt.exclude_labels), pa.bool_()))
        if drop_silent:
            index = index.filter(pc.invert(index["silent"]))
        paths = source_shards(folder, index)
        shards = pa.array([paths[s] for s in index["shard"].to_pylist()], pa.string())
        tables.append(index.select(["key", "task", "duration_s", "has_video"]).append_column("shard", shards))
    if not tables:
        return pa.table({"key": [], "task": [], "duration_s": [], "has_video": [], "shard": []})
    return pa.concat_tables(tables).sort_by([("shard", "ascending"), ("key", "ascending")])


def source_shards(folder: OutputDir, index: pa.Table) -> dict[str, str]:
    """{index shard value: absolute path} for a source's shards; an index naming a shard outside its folder is
    refused before any work (a missing or damaged shard only rejects the mixtures that use it)."""
    return {shard: str(folder.shard(shard)) for shard in sorted(set(index["shard"].to_pylist()))}


def source_checks(shards: Sequence[str]) -> dict[str, tuple[Optional[int], Optional[str]]]:
    """{shard path: (size, sha256) its ledger recorded} for source shards, read from their folders' indexes, so
    the mixing stage can tell a damaged source from a whole one."""
    checks: dict[str, tuple[Optional[int], Optional[str]]] = {}
    for root in sorted({s.rsplit("/", 2)[0] if storage.is_url(s) else str(Path(s).parent.parent) for s in shards}):
        folder = OutputDir(root)
        index = folder.read_index()
        if "shard_sha256" not in index.column_names:
            continue   # an output older than checksums
        for shard, size, sha in zip(index["shard"].to_pylist(), index["shard_size"].to_pylist(),
                                    index["shard_sha256"].to_pylist()):
            checks[str(folder.shard(shard))] = (size, sha)
    return checks


def plan_recipes(out_dir: Location, speech: pa.Table, sound: pa.Table, config: SynthMixConfig, video_fps: float,
                 *, write: bool = True) -> pa.Table:
    """Recipes 0..count-1: the ones already planned are read back, only new indices are sampled (and stored,
    unless `write` is False: a dry run)."""
    path = OutputDir(out_dir).recipes
    existing = read_table(path) if storage.exists(path) else None
    start = 0
    if existing is not None:
        seeds = set(existing["seed"].to_pylist())
        if seeds != {config.seed}:
            raise UsageError(f"{out_dir} holds mixtures of seed {sorted(seeds)}; use a new --out for seed {config.seed}")
        start = existing.num_rows
        if config.count < start:
            raise UsageError(f"{out_dir} already plans {start} mixtures; --count can grow, not shrink")
    if config.count > start and (speech.num_rows == 0 or sound.num_rows == 0):
        raise UsageError(f"no sources to mix: {speech.num_rows} speech and {sound.num_rows} sound samples after "
                         "filters (speech tasks: visual_tts, tts; sound: non-silent v2s)")
    speech_rows, sound_rows = speech.to_pylist(), sound.to_pylist()
    new = []
    for i in range(start, config.count):
        s, o = pick_sources(config.seed, i, len(speech_rows), len(sound_rows))
        new.append(sample_recipe(seed=config.seed, index=i, speech=speech_rows[s], sound=sound_rows[o],
                                 config=config.mix, video_fps=video_fps).to_dict())
    if not new:
        return existing
    table = pa.Table.from_pylist(new)
    if existing is not None:
        table = pa.concat_tables([existing, table])
    if write:
        write_table(path, table)
    return table


def mix_sample(row: Row):
    arrays = {"video": row.get("video"), "mel": row.get("mel"), "latent": row.get("latent"),
              "phones": row.get("phone_ids")}
    arrays.update({member: row[key] for member, key in STREAM_ROW_KEYS.items() if row.get(key) is not None})
    return json.loads(row["meta_json"]), arrays, row.get("flac")


def mix_index(row: Row, meta: dict) -> dict[str, Any]:
    recipe = meta["recipe"]
    return {"task": "joint", "dataset": meta["dataset"], "split": meta["split"], "speaker": meta["speaker"],
            "duration_s": meta["duration_s"], "has_video": True, "n_video": len(row["video"]),
            "n_mel": len(row["mel"]), "n_phones": len(row["phone_ids"]), "loudness_lufs": meta["loudness_lufs"],
            "silent": False, "cut": False, "mode": recipe["mode"], "snr_db": recipe["snr_db"],
            "offset_s": recipe["offset_s"], "speech_key": recipe["speech_key"], "sound_key": recipe["sound_key"]}


def mix_stages(contract: FeatureContract, config: SynthMixConfig,
               shard_checks: Optional[dict[str, tuple]] = None) -> list:
    stages = [MixStage(mel=contract.mel_config(), loudness=LoudnessConfig(**contract.loudness),
                       video_fps=contract.video_fps, shard_checks=shard_checks, streams=contract.streams,
                       speaker=contract.speaker)]
    if contract.latent:
        from stages.latent import LatentStage

        stages.append(LatentStage(vae_dir=config.vae_dir or contract.latent["vae_dir"]))
    return stages


class MixGraph:
    """The Ray side of one synth-mix run: a task per unit of recipes, rendering them and writing the shard."""

    def __init__(self, contract: FeatureContract, config: SynthMixConfig, out_dir, checks: dict, remote: bool):
        self.contract, self.config, self.out_dir, self.checks, self.remote = contract, config, out_dir, checks, remote
        self._work = None

    def placement(self) -> dict[str, Any]:
        import ray

        cpus = ray.cluster_resources().get("CPU", 1)
        workers = self.config.cpu_workers or max(1, int(cpus / self.config.cpu_stage_cpus))
        return {"placement": "fused", "unit_tasks_at_once": workers, "cpus_per_task": self.config.cpu_stage_cpus}

    def work(self):
        from pipeline.jobs.assemble import UnitWork

        if self._work is None:
            self._work = UnitWork(job=JOB, out_root=self.out_dir, contract=self.contract, to_sample=mix_sample,
                                  to_index=mix_index, stages=tuple(mix_stages(self.contract, self.config, self.checks)),
                                  rows_per_chunk=self.config.rows_per_task, drop=("audio",),
                                  stage_key=f"{JOB}-{uuid.uuid4().hex}")
        return self._work

    def __call__(self, rows: pa.Table):
        from pipeline.jobs.ray_exec import unit_dataset

        return unit_dataset(rows, self.work(), num_cpus=self.config.cpu_stage_cpus,
                            concurrency=self.placement()["unit_tasks_at_once"], remote=self.remote)


def run_synth_mix(*, speech_dirs: Sequence[Location], sound_dirs: Sequence[Location], out_dir: Location,
                  config: SynthMixConfig, address: Optional[str] = None,
                  progress: Optional[Callable[[dict], None]] = None,
                  options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Run (or resume, or grow) a synth-mix job; returns the report. Sources are checked before anything is
    written, and the recipes are planned under the output's lock (a second run cannot rewrite them)."""
    out_dir = storage.as_location(str(out_dir))
    speech_sources, sound_sources = resolve_sources(speech_dirs), resolve_sources(sound_dirs)
    contract = source_contract([*speech_sources, *sound_sources])
    if contract.latent and config.vae_dir is None and not Path(contract.latent["vae_dir"]).is_dir():
        raise UsageError(f"the sources carry VAE latents but their VAE {contract.latent['vae_dir']} is not "
                         "here: pass --vae DIR")
    speech = source_pool(speech_sources, SPEECH_SOURCE_TASKS, config.speech, drop_silent=False)
    sound = source_pool(sound_sources, SOUND_SOURCE_TASKS, config.sound, drop_silent=True)
    remote = storage.is_url(out_dir) or any(storage.is_url(d) for d in [*speech_sources, *sound_sources])

    def spec_of(recipes: pa.Table) -> JobSpec:
        rows = recipes.append_column("clip_id", recipes["key"])
        checks = source_checks(sorted(set(rows["speech_shard"].to_pylist()) | set(rows["sound_shard"].to_pylist())))
        graph = MixGraph(contract, config, out_dir, checks, remote)
        return JobSpec(name=JOB, out_dir=out_dir, contract=contract, config=config, rows=rows,
                       shard_size=config.shard_size, to_sample=mix_sample, to_index=mix_index, build_dataset=graph,
                       placement=graph.placement, source=json.dumps({"speech": [str(d) for d in speech_dirs],
                                                                     "sound": [str(d) for d in sound_dirs]}))

    if options.dry_run:
        return dry_run(spec_of(plan_recipes(out_dir, speech, sound, config, contract.video_fps, write=False)),
                       address=address, options=options)
    with output_lock(out_dir) as lease:
        open_output(out_dir, JOB, contract, config)  # refuse a foreign folder before writing recipes into it
        spec = spec_of(plan_recipes(out_dir, speech, sound, config, contract.video_fps))
        return run_locked(spec, address=address, progress=progress, options=options, lease=lease)
