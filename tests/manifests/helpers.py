"""What the manifest tests build: small text files, clips, Parquet tables and one tiny corpus per layout."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.schema import Clip


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def clip(clip_id="a", task="v2s", **kw):
    kw.setdefault("video_path", "v.mp4")
    return Clip(clip_id=clip_id, task=task, **kw)


def write(tmp_path, data: dict, name="m.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table(data), path)
    return path


# ----------------------------------------------------------------------------------------------- corpora


def make_ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    touch(root / "metadata.csv", "LJ001-0001|Printing, in 1869|Printing, in eighteen sixty-nine\n"
                                 "LJ001.0002|\"Quoted\" text|\"Quoted\" text\n\n"
                                 "LJ001-0003|Only two fields\n")
    for name in ("LJ001-0001", "LJ001.0002", "LJ001-0003"):
        touch(root / "wavs" / f"{name}.wav")
    return root


def make_libritts(tmp_path):
    root = tmp_path / "LibriTTS"
    chapter = root / "train-clean-100" / "84" / "121123"
    touch(chapter / "84_121123_000007_000000.wav")
    touch(chapter / "84_121123_000007_000000.normalized.txt", "Hello there.\n")
    touch(chapter / "84_121123_000007_000000.original.txt", "HELLO there")
    touch(chapter / "84_121123_000008_000000.wav")
    touch(chapter / "84_121123_000008_000000.original.txt", "Only original.")
    touch(root / "dev-clean" / "1272" / "128104" / "1272_128104_000001_000000.wav")  # no transcript
    return root


def make_lrs2(tmp_path):
    main = tmp_path / "lrs2" / "main"
    touch(main / "5535415699068794046" / "00001.mp4")
    touch(main / "5535415699068794046" / "00001.txt", "Text:  WHEN YOU'RE COOKING CHIPS\nConf:  4\n")
    touch(main / "6330311066473698535" / "00011.mp4")  # no transcript file
    listing = touch(tmp_path / "lrs2" / "test.txt", "5535415699068794046/00001 NF\n\n6330311066473698535/00011 MV\n")
    return listing, main


GRID_ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 sp\n35500 41000 at\n41000 74500 sil\n"


def make_grid(tmp_path):
    root = tmp_path / "grid"
    touch(root / "s1" / "bbaf2n.mpg")
    touch(root / "s1" / "align" / "bbaf2n.align", GRID_ALIGN)
    touch(root / "s2" / "lgaz5a.mpg")  # no alignment
    return root


REF_LINE = "{audio}|feat/clip/{stem}.npy|feat/spk/{stem}.npy|feat/lip/{stem}.npy|feat/sync/{stem}.npy|1 2 3|h ə l"
