"""`pipeline inspect`: what an output folder holds, one sample in detail, and a picture of it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Optional

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.table import Table

from pipeline.cli.common import console
from stages.format.contract import check_sample, read_dataset_json
from stages.format.layout import DamagedShard, OutputDir, SampleNotFound
from stages.format.shard_io import ShardReader, load_npy


def _counts(table, column: str) -> list[tuple[str, int]]:
    if table.num_rows == 0 or column not in table.column_names:
        return []
    counts = pc.value_counts(table[column]).to_pylist()
    return sorted(((str(c["values"]), int(c["counts"])) for c in counts), key=lambda x: -x[1])


def describe_output(out: Path) -> None:
    folder = OutputDir(out)
    contract, doc = read_dataset_json(folder.root)
    index = folder.read_index()
    rejects = pq.read_table(folder.rejects)
    table = Table(title=f"{out}  ({doc['job']}, features {contract.feature_hash})", title_justify="left")
    table.add_column("what")
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_row("samples", "", str(index.num_rows))
    for column in ("task", "dataset", "split"):
        for value, n in _counts(index, column):
            table.add_row(column, value, str(n))
    if rejects.num_rows:
        reasons = rejects.append_column("why", pc.binary_join_element_wise(rejects["stage"], rejects["reason"], "/"))
        for value, n in _counts(reasons, "why"):
            table.add_row("rejected", value, str(n))
    encoder = contract.video_encoder
    table.add_row("video", f"{contract.video_dim}-d {encoder['name']} at {contract.video_fps} fps"
                  + (" [RANDOM TEST ENCODER]" if encoder.get("random_init") else ""), "")
    for name, stream in (contract.streams or {}).items():
        shape = "x".join(str(n) for n in stream["frame_shape"])
        table.add_row(name, f"{stream['dtype']} {shape} {stream['region']} at {stream['fps']:g} fps, "
                      f"{stream['encoder']['name']}" + (" [RANDOM TEST ENCODER]" if stream["encoder"].get("random_init")
                                                         else ""), "")
    if contract.speaker:
        table.add_row("speaker", f"{contract.speaker['dim']}-d {contract.speaker['encoder']['name']}", "")
    table.add_row("audio", f"{contract.sample_rate} Hz, mel {contract.n_mels} x {contract.mel_fps:g} fps"
                  + (f", latents {contract.latent['channels']}ch" if contract.latent else ""), "")
    console.print(table)


def describe_sample(out: Path, key: Optional[str]) -> dict[str, Any]:
    folder = OutputDir(out)
    contract, _ = read_dataset_json(folder.root)
    if key is None:
        index = folder.read_index(["key"])
        if index.num_rows == 0:
            raise SampleNotFound(f"{out} holds no samples")
        key = index["key"][0].as_py()
    shard = folder.find(key, verify=True)
    try:   # every K.NAME.npy member, also the streams a later contract adds
        members = ShardReader().read(shard, key)
        sample = {"key": key, "meta": json.loads(members["json"]), "flac": members.get("audio.flac"),
                  "arrays": {s[: -len(".npy")]: load_npy(data) for s, data in members.items() if s.endswith(".npy")}}
    except KeyError:
        raise SampleNotFound(f"{key} listed in index.parquet but not found (or without its json) in {shard}") from None
    except (tarfile.TarError, OSError, ValueError) as e:
        raise DamagedShard(f"shard {shard} cannot be read ({type(e).__name__}: {e}); re-run the job that wrote "
                           f"{folder.root}") from None
    table = Table(title=f"sample {key}  ({shard.name})", show_header=False, title_justify="left")
    for name, array in sample["arrays"].items():
        if array is not None:
            table.add_row(f"{name}.npy", f"{array.dtype} {list(array.shape)}")
    if sample["flac"] is not None:
        table.add_row("audio.flac", f"{len(sample['flac']) / 1e3:.1f} kB")
    problems = check_sample(sample["meta"], sample["arrays"], contract)
    table.add_row("contract", "ok" if not problems else "; ".join(problems))
    console.print(table)
    console.print_json(json.dumps(sample["meta"], ensure_ascii=False))
    sample["contract"] = contract
    return sample


FIRST_PANELS = ("mel", "video", "latent")


def plot_streams(arrays: dict[str, Any]) -> list[str]:
    """The arrays the plot draws, top to bottom: mel, video, latent, then every other stream with a time axis
    (`[T, D]` features or `[T, S, S]` mouth crops, e.g. one a later contract adds); 1-D members such as phones
    or validity masks are not drawn."""
    timed = {name for name, a in arrays.items() if a is not None and a.ndim in (2, 3) and len(a)}   # 3: crops
    return [n for n in FIRST_PANELS if n in timed] + sorted(timed - set(FIRST_PANELS))


def plot_sample(sample: dict[str, Any], path: Path) -> Path:
    """The mel spectrogram above every other timed stream (features z-scored per dimension, mouth crops as the
    mouth's opening), one time axis in seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contract, arrays = sample["contract"], sample["arrays"]
    duration = sample["meta"]["duration_s"]
    streams = plot_streams(arrays)
    fig, axes = plt.subplots(len(streams), 1, figsize=(10, 2.6 * len(streams)), sharex=True, squeeze=False)
    title = f"{sample['key']}  ({sample['meta']['task']}, {duration:.2f}s)"
    if sample["meta"].get("transcript"):
        title += f"\n{sample['meta']['transcript'][:90]}"
    axes[0, 0].set_title(title, fontsize=9)
    fps = {"mel": contract.mel_fps, "video": contract.video_fps,
           **{name: stream["fps"] for name, stream in contract.all_streams().items()}}
    for ax, name in zip(axes[:, 0], streams):
        values = arrays[name]
        rate = fps.get(name, len(values) / duration)       # a stream this contract does not know: spread over the clip
        if name == "mel":
            ax.imshow(values.astype("float32").T, origin="lower", aspect="auto",
                      extent=(0, len(values) / rate, 0, contract.n_mels), cmap="magma")
            ax.set_ylabel("mel band")
        elif values.ndim == 3:                             # mouth crops [T, S, S]
            _plot_mouth_opening(ax, values, arrays.get(f"{name}_valid"), rate)
        else:
            _plot_features(ax, values, rate, f"{name} dim, z-scored" + (f"\n({rate:g} fps)" if name in fps else ""))
    span = sample["meta"].get("speech_span_s")
    if span:
        for a in axes[:, 0]:
            a.axvspan(span[0], span[1], color="cyan", alpha=0.12, lw=0)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_features(ax, values, fps: float, label: str) -> None:
    """Features [T, D] as an image, z-scored per dim: shows when the input changes."""
    feats = values.astype("float32")
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    ax.imshow(feats.T, origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, len(values) / fps, 0, values.shape[1]), cmap="coolwarm", vmin=-3, vmax=3)
    ax.set_ylabel(label)


def _plot_mouth_opening(ax, crops, valid, fps: float) -> None:
    """Mouth crops [T, S, S] as the darkness of each crop's centre (an open mouth is dark); face-less frames grey."""
    import numpy as np

    size = crops.shape[1]
    centre = crops[:, int(0.34 * size):int(0.8 * size), int(0.23 * size):int(0.77 * size)].astype(np.float32)
    t = np.arange(len(crops)) / fps                     # row i is the frame shown at i / fps
    ax.plot(t, 255.0 - centre.mean(axis=(1, 2)), color="black", lw=1)
    if valid is not None:
        for i in np.flatnonzero(valid == 0):
            ax.axvspan(t[i], t[i] + 1 / fps, color="grey", alpha=0.3, lw=0)
    ax.set_ylabel(f"mouth opening\n(crop centre darkness,\n{fps:g} fps)")
