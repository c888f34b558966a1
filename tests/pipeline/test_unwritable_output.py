"""A full disk or a read-only output folder: one message, exit 1, nothing half-written, finished shards kept.

The disk and the read-only folder are real: a small tmpfs (mounted when the tests run as root, which may mount) or,
for the read-only case without root, a folder without write permission."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app

runner = CliRunner()


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)  # a Ray worker may still hold a file there


def extract_args(corpus, tiny_clip, out: Path) -> list[str]:
    return [str(a) for a in ["run", "extract", "--manifest", corpus.manifest, "--data-root", corpus.root,
                             "--out", out, "--visual-model", tiny_clip, "--shard-size", "4"]]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def test_a_full_disk_is_one_message_and_leaves_no_half_written_file(corpus, tiny_clip, ray_session, tmp_path,
                                                                    mounts):
    disk = tmp_path / "small-disk"
    if not mount_tmpfs(disk, "size=160k"):
        pytest.skip("a small tmpfs needs root and mount here")
    mounts.append(disk)
    result = runner.invoke(app, extract_args(corpus, tiny_clip, disk / "out"))
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "cannot write to" in said and "No space left on device" in said, said
    assert "Traceback" not in result.output
    assert leftovers(disk) == []
    for shard in (disk / "out" / "shards").glob("*.tar"):      # every shard that exists is whole
        assert not shard.name.startswith(".")


def test_a_read_only_output_is_one_message(corpus, tiny_clip, extracted, ray_session, tmp_path, mounts):
    empty = tmp_path / "ro-empty"
    finished = tmp_path / "ro-finished"
    if mount_tmpfs(empty, "ro,size=1m"):
        mounts.append(empty)
        staging = tmp_path / "staging"
        shutil.copytree(extracted[0], staging)
        assert mount_tmpfs(finished, "size=64m")
        mounts.append(finished)
        shutil.copytree(staging, finished, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(finished)], check=True)
    elif os.geteuid() != 0:
        empty.mkdir()
        shutil.copytree(extracted[0], finished)
        for folder in (empty, finished, *[p for p in finished.rglob("*") if p.is_dir()]):
            folder.chmod(0o555)
    else:
        pytest.skip("root without mount: permissions cannot make a folder read-only here")
    before = sorted(p.relative_to(finished).as_posix() for p in finished.rglob("*"))
    for out in (empty, finished):
        result = runner.invoke(app, extract_args(corpus, tiny_clip, out))
        said = " ".join(result.output.split())
        assert result.exit_code == 1 and "cannot write to" in said and "Traceback" not in result.output, said
        assert "Read-only file system" in said or "Permission denied" in said, said
    assert sorted(p.relative_to(finished).as_posix() for p in finished.rglob("*")) == before
