"""The hostile-input campaign as a table: each case is what a careless or hostile user types, and what must happen
instead of a traceback: one message saying what is wrong and what to do, exit code 2 for a usage error and 1 for a
runtime failure, and nothing half-written."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[..., list[str]]    # (env) -> the `pipeline` arguments
    code: int                         # 2: usage error, 1: runtime failure
    says: str                         # a regex the message must match (whitespace folded)
    writes_nothing: bool = True       # the output folder stays absent or empty


def extract(env, *extra, config: str | None = None) -> list[str]:
    argv = ["run", "extract", "--manifest", env.corpus.manifest, "--data-root", env.corpus.root, "--out",
            env.out, "--visual-model", env.tiny_clip, *extra]
    if config is not None:
        path = env.tmp / "config.yaml"
        path.write_text(config)
        argv += ["--config", path]
    return [str(a) for a in argv]


def synth_mix(env, *extra, config: str | None = None) -> list[str]:
    src = env.extracted
    argv = ["run", "synth-mix", "--speech", src, "--sound", src, "--out", env.out, *extra]
    if config is not None:
        path = env.tmp / "config.yaml"
        path.write_text(config)
        argv += ["--config", path]
    return [str(a) for a in argv]


def pickled_model(env) -> list[str]:
    folder = env.tmp / "pickled-clip"
    folder.mkdir()
    (folder / "config.json").write_text((Path(env.tiny_clip) / "config.json").read_text())
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": [1, 2, 3]}, f)   # what a pickle can carry is not for us to find out
    return [str(a) for a in ["run", "extract", "--manifest", env.corpus.manifest, "--data-root", env.corpus.root,
                             "--out", env.out, "--visual-model", folder]]


def shard_with_a_parent_member(env) -> list[str]:
    """A shard holding an extra `../evil.json` member, its checksum re-recorded so only the name gives it away."""
    import shutil
    import tarfile

    import pyarrow.parquet as pq

    from tests.shard_tools import rerecord_shards

    src = env.tmp / "src"
    shutil.copytree(env.extracted, src)
    index = pq.read_table(src / "index.parquet")
    shard = src / index["shard"][0].as_py()
    with tarfile.open(shard, "a") as tar:
        payload = b'{"task": "v2s"}'
        info = tarfile.TarInfo("../evil.json")
        info.size = len(payload)
        tar.addfile(info, __import__("io").BytesIO(payload))
    rerecord_shards(src)
    return [str(a) for a in ["run", "pretrain", "--data", src, "--out", env.out, "--preset", "tiny", "--steps", "2",
                             "--batch-size", "2", "--loader-workers", "0"]]


def corrupt_schedules(env) -> list[str]:
    store = env.tmp / "schedules.json"
    store.write_text('{"schema_version": 1, "schedules": {')
    return ["schedule", "list", "--store", str(store)]


CASES = [
    Case("invalid YAML", lambda e: extract(e, config="shard_size: [1,\n"), 2, r"is not valid YAML \(line 2"),
    Case("shard_size a word", lambda e: extract(e, config="shard_size: x\n"), 2,
         r"shard_size: Input should be a valid integer.*'x'"),
    Case("shard_size 0", lambda e: extract(e, config="shard_size: 0\n"), 2, r"shard_size must be >= 1"),
    Case("shard_size negative", lambda e: extract(e, config="shard_size: -1\n"), 2, r"shard_size must be >= 1"),
    Case("--shard-size 0", lambda e: extract(e, "--shard-size", "0"), 2, r"Invalid value for '--shard-size': Input should be greater than or equal to 1"),
    Case("--shard-size negative", lambda e: extract(e, "--shard-size", "-1"), 2, r"--shard-size"),
    Case("decode a number", lambda e: extract(e, config="decode: 5\n"), 2,
         r"decode: Input should be a dictionary"),
    Case("a !!python tag", lambda e: extract(e, config="shard_size: !!python/object/apply:os.system ['true']\n"), 2,
         r"tags such as !!python are refused"),
    Case("decode.fps a word", lambda e: extract(e, config="decode:\n  fps: ten\n"), 2,
         r"decode\.fps: Input should be a valid number.*'ten'"),
    Case("pickled model weights", pickled_model, 1, r"holds only pickled weights \(pytorch_model\.bin\)"),
    Case("--count 0", lambda e: synth_mix(e, "--count", "0"), 2, r"Invalid value for '--count': Input should be greater than or equal to 1"),
    Case("--count negative", lambda e: synth_mix(e, "--count", "-5"), 2, r"--count"),
    Case("SNR NaN", lambda e: synth_mix(e, config="mix:\n  snr_db_min: .nan\n"), 2,
         r"mix\.snr_db_min must be a finite SNR|snr_db_min.*finite"),
    Case("SNR -200 dB", lambda e: synth_mix(e, config="mix:\n  snr_db_min: -200\n"), 2,
         r"snr_db_min must be a finite SNR in \[-30, 60\] dB"),
    Case("negative mode weights", lambda e: synth_mix(e, config="mix:\n  mode_weights: {add: -1, insert: 1}\n"),
         2, r"mode_weights must be finite and >= 0.*'add': -1"),
    Case("corrupt schedules.json", corrupt_schedules, 2, r"schedules\.json is not a readable schedule store"),
    Case("a tar member named ../", shard_with_a_parent_member, 1, r"holds a member named '\.\./evil'",
         writes_nothing=False),
]


@dataclass
class Env:
    corpus: object
    tiny_clip: Path
    extracted: Path
    tmp: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_one_clear_message(case, corpus, tiny_clip, extracted, tmp_path):
    env = Env(corpus, tiny_clip, extracted[0], tmp_path)
    result = runner.invoke(app, case.argv(env))
    said = " ".join(result.output.split())
    assert result.exit_code == case.code, said
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    assert __import__("re").search(case.says, said), said
    if case.writes_nothing:
        assert not env.out.exists() or not any(env.out.iterdir()), "a refused command wrote into its output folder"


def test_the_campaign_names_every_case_once():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and json.dumps(names)
