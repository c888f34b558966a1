"""The dataset card of an output folder (`README.md`, read by Hugging Face `datasets`) and a `wids` shard index.

`datasets`' webdataset builder needs every sample of a config to hold the same members (a TTS sample has no
`video.npy`, a V2S sample no `phones.npy`), so the card has one config per task, each listing the shards whose
samples all have that task, by the canonical split their samples share. A shard holding several tasks is left out
of every config and listed in the card (the job runner plans one task per shard; outputs made before it may mix
them). A shard of one task whose samples span several splits goes into the split `mixed` (each sample's json
names its split).

Each config's features are declared in the card rather than inferred by `datasets` from its first five samples (a
metadata field null there and a list later would fail the load): the json member's type is unified over every
sample's `K.json` of the config (read when the card is written: one tar header scan per shard and the small json
members), the arrays' from the first sample's `.npy` headers.
"""

from __future__ import annotations

import collections
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import yaml

from manifests import storage
from manifests.readers.registry import corpus_of
from stages.format.contract import FeatureContract, read_dataset_json
from stages.format.layout import OutputDir, read_table

MIXED_SPLITS = "mixed"
UNKNOWN_LICENCE = "not recorded (no reader declares this corpus): state it before sharing this output"
ARROW_TO_HF = {"double": "float64", "float": "float32", "halffloat": "float16", "large_string": "large_string"}


# ----------------------------------------------------------------------------------------------------------------------
# Which shards make which config


def plan_configs(index: pa.Table) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[str]]]:
    """({task: {split: [shard, ...]}}, {shard holding several tasks: its tasks}), shards in index order."""
    tasks: dict[str, set] = collections.defaultdict(set)
    splits: dict[str, set] = collections.defaultdict(set)
    for shard, task, split in zip(index["shard"].to_pylist(), index["task"].to_pylist(),
                                  index["split"].to_pylist() if "split" in index.column_names
                                  else [None] * index.num_rows):
        tasks[shard].add(task)
        splits[shard].add(split)
    configs: dict[str, dict[str, list[str]]] = {}
    left_out = {}
    for shard in tasks:   # insertion order: index order
        if len(tasks[shard]) > 1:
            left_out[shard] = sorted(tasks[shard])
            continue
        (task,) = tasks[shard]
        (split,) = splits[shard] if len(splits[shard]) == 1 and None not in splits[shard] else (MIXED_SPLITS,)
        configs.setdefault(task, {}).setdefault(split, []).append(shard)
    return {task: configs[task] for task in sorted(configs)}, left_out


# ----------------------------------------------------------------------------------------------------------------------
# What the samples of a config hold


def scan_shards(paths: Iterable[Path]) -> tuple[pa.Schema, dict[str, Any]]:
    """(the json member's Arrow schema unified over every sample, the first sample's members: suffix -> "json",
    "audio", ("npy", dtype, ndim) or "binary")."""
    schemas, first, first_key = [], {}, None
    for path in paths:
        metas = []
        with storage.open_read(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if not info.isfile() or "." not in info.name:
                    continue
                key, suffix = info.name.split(".", 1)
                first_key = first_key or key
                if suffix == "json":
                    metas.append(json.loads(tar.extractfile(info).read()))
                if key == first_key:
                    first[suffix] = _member_kind(suffix, tar.extractfile(info))
        if metas:
            schemas.append(pa.Table.from_pylist(metas).schema)
    return pa.unify_schemas(schemas, promote_options="permissive"), first


def _member_kind(suffix: str, f: io.BufferedReader) -> Any:
    if suffix == "json":
        return "json"
    if suffix.endswith(".flac"):
        return "audio"
    if suffix.endswith(".npy"):
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        return ("npy", str(dtype), len(shape))
    return "binary"


def _arrow_feature(kind: pa.DataType) -> dict[str, Any]:
    """One Arrow type as the Hugging Face features YAML writes it (`dtype`, `struct` or `list`)."""
    if pa.types.is_struct(kind):
        return {"struct": [{"name": f.name, **_arrow_feature(f.type)} for f in kind]}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return {"list": _list_item(_arrow_feature(kind.value_type))}
    return {"dtype": ARROW_TO_HF.get(str(kind), str(kind))}


def _list_item(feature: dict[str, Any]) -> Any:
    """The value of a `list:` entry: a dtype name, a struct's field list, or a nested list."""
    return feature.get("dtype") or feature.get("struct") or feature


def features_yaml(json_schema: pa.Schema, members: dict[str, Any]) -> list[dict[str, Any]]:
    features = []
    for suffix, kind in members.items():
        if kind == "json":
            features.append({"name": suffix, "struct": [{"name": f.name, **_arrow_feature(f.type)}
                                                        for f in json_schema]})
        elif kind in ("audio", "binary"):   # FLAC bytes: datasets' Audio feature needs torchcodec even to store
            features.append({"name": suffix, "dtype": "binary"})
        else:
            _, dtype, ndim = kind
            item: Any = dtype
            for _ in range(ndim):
                item = {"list": item}
            features.append({"name": suffix, **item})
    return features + [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]


# ----------------------------------------------------------------------------------------------------------------------
# Sources and licences


def source_datasets(folder: OutputDir, index: pa.Table, job: str) -> dict[str, int]:
    """{dataset: samples} of the output; for a mixture output, the datasets of its source folders (their samples)."""
    if job != "synth-mix":
        return dict(collections.Counter(index["dataset"].to_pylist()))
    report = folder.read_json(folder.report) or {}
    try:
        sources = json.loads(report.get("manifest") or "{}")
    except ValueError:
        sources = {}
    counts: collections.Counter = collections.Counter()
    for source in [*sources.get("speech", []), *sources.get("sound", [])]:
        source_index = OutputDir(source).index
        if storage.exists(source_index):
            counts.update(read_table(source_index, columns=["dataset"])["dataset"].to_pylist())
    return dict(counts)


def licence_rows(datasets: dict[str, int]) -> tuple[list[str], str]:
    """Markdown rows (dataset, samples, licence, homepage) and the card's `license:` id."""
    rows, ids = [], set()
    for name, n in sorted(datasets.items(), key=lambda item: str(item[0])):
        corpus = corpus_of(name)
        ids.add(corpus.hf_licence if corpus else "unknown")
        said = corpus.licence if corpus else UNKNOWN_LICENCE
        rows.append(f"| {name} | {n} | {said} | {corpus.homepage if corpus else ''} |")
    licence = ids.pop() if len(ids) == 1 else ("unknown" if "unknown" in ids else "other")
    return rows, licence


# ----------------------------------------------------------------------------------------------------------------------
# The card


def front_matter(name: str, configs: dict, features: dict, licence: str) -> str:
    meta = {
        "pretty_name": name, "license": licence, "tags": ["vssflow", "webdataset", "audio", "video", "speech"],
        "configs": [{"config_name": task, "data_files": [{"split": split, "path": shards}
                                                         for split, shards in splits.items()]}
                    for task, splits in configs.items()],
        "dataset_info": [{"config_name": task, "features": features[task]} for task in configs],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, width=120) + "---\n"


def contract_rows(contract: FeatureContract) -> list[str]:
    encoder = contract.video_encoder
    phones = contract.phones
    rows = [f"| sample rate | {contract.sample_rate} Hz mono |",
            f"| video features | {contract.video_dim}-d {encoder.get('name')} at {contract.video_fps:g} fps"
            + (" (RANDOMLY INITIALISED test encoder)" if encoder.get("random_init") else "") + " |",
            f"| mel | {contract.n_mels} bands at {contract.mel_fps:g} fps, natural log |",
            f"| phonemes | {phones.get('phone_set', 'ipa-char')}, {phones['vocab'].get('version')} "
            f"({contract.vocab_size} ids, 0 = padding) |",
            f"| max clip length | {contract.max_seconds:g} s |",
            f"| feature hash | `{contract.feature_hash}` |"]
    if contract.latent:
        rows.insert(3, f"| VAE latents | {contract.latent['channels']} channels |")
    return rows


def card_text(folder: OutputDir, contract: FeatureContract, doc: dict, index: pa.Table,
              configs: dict, left_out: dict, features: dict) -> str:
    counts = collections.Counter(zip(index["shard"].to_pylist(), index["task"].to_pylist()))
    sizes = dict(zip(index["shard"].to_pylist(), index["shard_size"].to_pylist())) \
        if "shard_size" in index.column_names else {}
    rows, licence = licence_rows(source_datasets(folder, index, doc["job"]))
    name = output_name(folder)
    lines = [front_matter(name, configs, features, licence),
             f"# {name}: a VSSFlow {doc['job']} output", "",
             f"Written by `pipeline run {doc['job']}`: {index.num_rows} samples in "
             f"{len(set(index['shard'].to_pylist()))} WebDataset shards. One sample is the tar members sharing its "
             "key; `index.parquet` lists them (key, shard, task, dataset, split, durations, ...).", "",
             "## Load it", "", "```python", "import pipeline                      # this project's reader",
             f"out = pipeline.open_output({str(folder.root)!r})",
             "sample = next(iter(out.filter(split=\"train\")))   # .audio float32, .arrays['mel'], .meta", "",
             "import datasets, soundfile, io        # Hugging Face datasets, one config per task",
             f"ds = datasets.load_dataset({str(folder.root)!r}, {next(iter(configs), 'TASK')!r})",
             "wave, rate = soundfile.read(io.BytesIO(ds[\"train\"][0][\"audio.flac\"]))   # FLAC bytes, 16 kHz",
             "# with torchcodec installed: ds.cast_column(\"audio.flac\", datasets.Audio()) decodes on access",
             "```", "",
             "`wids-index.json` lists every shard with its sample count: "
             "`wids.ShardListDataset(OUT + \"/wids-index.json\")` reads sample i by position.", "",
             "## Configs", "", "| config | split | samples | shards | MB |", "|---|---|---|---|---|"]
    for task, splits in configs.items():
        for split, shards in splits.items():
            lines.append(f"| {task} | {split} | {sum(counts[(s, task)] for s in shards)} | {len(shards)} | "
                         f"{sum(sizes.get(s) or 0 for s in shards) / 1e6:.1f} |")
    if left_out:
        lines += ["", f"**Left out of every config**: {len(left_out)} shard(s) holding more than one task "
                  "(datasets needs one set of members per config); read them with `pipeline.open_output` or "
                  "plain `webdataset`:", ""]
        lines += [f"- `{shard}`: {', '.join(tasks)}" for shard, tasks in left_out.items()]
    lines += ["", "## Sources and licences", "", "| dataset | samples | licence | homepage |", "|---|---|---|---|",
              *rows, "", "## Members of a sample", "", "| member | what |", "|---|---|",
              *[f"| `K.{member}` | {what} |" for member, what in contract.members.items()],
              "", "## Feature contract (`dataset.json`)", "", "| | |", "|---|---|", *contract_rows(contract), ""]
    return "\n".join(lines)


def output_name(folder: OutputDir) -> str:
    """The output folder's last name (a local folder's after resolving; an object-storage prefix's last part)."""
    return str(folder.root).rstrip("/").rsplit("/", 1)[-1] if folder.remote else Path(folder.root).resolve().name


def wids_index(folder: OutputDir, index: pa.Table) -> dict[str, Any]:
    counts = collections.Counter(index["shard"].to_pylist())
    sizes = dict(zip(index["shard"].to_pylist(), index["shard_size"].to_pylist())) \
        if "shard_size" in index.column_names else {}
    return {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": output_name(folder),
            "shardlist": [{"url": shard, "nsamples": n, **({"filesize": sizes[shard]} if sizes.get(shard) else {})}
                          for shard, n in counts.items()]}


def write_card(out_dir: Path) -> dict[str, Any]:
    """Write OUT/README.md (the dataset card) and OUT/wids-index.json from the index and the shards; returns
    {"configs": {task: {split: [shard]}}, "left_out": {shard: [tasks]}}."""
    folder = OutputDir(out_dir)
    contract, doc = read_dataset_json(folder.root)
    index = folder.read_index()
    if index.num_rows == 0:   # a job that kept nothing writes an index of keys alone
        index = pa.table({name: pa.array([], pa.string()) for name in ("key", "shard", "task", "split", "dataset")})
        configs, left_out, features = {}, {}, {}
    else:
        configs, left_out = plan_configs(index)
        features = {}
        for task, splits in configs.items():
            schema, members = scan_shards(folder.shard(s) for shards in splits.values() for s in shards)
            features[task] = features_yaml(schema, members)
    storage.write_bytes(folder.card, card_text(folder, contract, doc, index, configs, left_out, features).encode())
    storage.write_bytes(folder.wids_index, json.dumps(wids_index(folder, index), indent=1).encode())
    return {"configs": configs, "left_out": left_out}
