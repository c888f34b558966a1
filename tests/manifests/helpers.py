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
    """LibriTTS as published (openslr 60): SUBSET/SPEAKER/CHAPTER/ID.wav beside ID.normalized.txt and
    ID.original.txt, with the test and dev subsets, and the `._*` resource forks a copy made on a Mac carries."""
    root = tmp_path / "LibriTTS"
    chapter = root / "train-clean-100" / "84" / "121123"
    touch(chapter / "84_121123_000007_000000.wav")
    touch(chapter / "84_121123_000007_000000.normalized.txt", "Hello there.\n")
    touch(chapter / "84_121123_000007_000000.original.txt", "HELLO there")
    touch(chapter / "84_121123_000008_000000.wav")
    touch(chapter / "84_121123_000008_000000.original.txt", "Only original.")
    touch(chapter / "._84_121123_000008_000000.wav")  # AppleDouble: not audio
    (chapter / "._84_121123_000008_000000.normalized.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe Mac OS X")
    touch(root / "dev-clean" / "1272" / "128104" / "1272_128104_000001_000000.wav")  # no transcript
    other = root / "test-other" / "1688" / "142285"
    touch(other / "1688_142285_000000_000000.wav")
    (other / "1688_142285_000000_000000.normalized.txt").write_bytes(b"caf\xe9 latin-1")  # not UTF-8
    return root


LRS2_PRETRAIN_WORDS = [  # a 14 s pretrain clip: (word, start, end), seconds from the clip's start
    ("WHEN", 0.30, 0.52), ("YOU'RE", 0.52, 0.70), ("COOKING", 0.70, 1.10), ("CHIPS", 1.10, 1.60),
    ("AT", 1.90, 2.00), ("HOME", 2.00, 2.40), ("THE", 2.40, 2.50), ("DANGEROUS", 2.50, 3.10), ("PART", 3.10, 3.50),
    ("IS", 3.50, 3.70), ("THE", 4.60, 4.70), ("FRYING", 4.70, 5.20), ("PAN", 5.20, 5.60), ("BECAUSE", 5.60, 6.10),
    ("THE", 6.10, 6.20), ("OIL", 6.20, 6.60), ("GETS", 6.60, 6.90), ("VERY", 6.90, 7.30), ("HOT", 7.30, 7.80),
    ("AND", 8.70, 8.90), ("IT", 8.90, 9.00), ("CAN", 9.00, 9.30), ("CATCH", 9.30, 9.70), ("FIRE", 9.70, 10.30),
    ("SO", 11.00, 11.20), ("NEVER", 11.20, 11.60), ("LEAVE", 11.60, 11.90), ("IT", 11.90, 12.00),
    ("ALONE", 12.00, 12.60), ("AT", 12.90, 13.00), ("ALL", 13.00, 13.70),
]


def lrs2_text(words, conf=4) -> str:
    """An LRS2 transcript file: `Text:` line, `Conf:` line, then the word table of the pretrain set."""
    table = "".join(f"{w} {a:.2f} {b:.2f} 2.5\n" for w, a, b in words)
    return f"Text:  {' '.join(w for w, _, _ in words)}\nConf:  {conf}\n\nWORD START END ASDSCORE\n{table}"


def make_lrs2_pretrain(tmp_path):
    """LRS2's pretrain set as published: pretrain.txt lists VIDEO/UTTERANCE ids under pretrain/, upper-case text."""
    media = tmp_path / "lrs2" / "pretrain"
    touch(media / "5540428733574932617" / "00012.mp4")
    touch(media / "5540428733574932617" / "00012.txt", lrs2_text(LRS2_PRETRAIN_WORDS))
    touch(media / "5540428733574932617" / "00013.mp4")
    touch(media / "5540428733574932617" / "00013.txt", lrs2_text(LRS2_PRETRAIN_WORDS[:9]))
    listing = touch(tmp_path / "lrs2" / "pretrain.txt", "5540428733574932617/00012\n5540428733574932617/00013\n")
    return listing, media


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


def make_grid_release(tmp_path):
    """GRID as its public release unpacks: SPEAKER/UTTERANCE.mpg (s1.mpg_vcd.zip) and the alignments in their own
    folder, alignments/SPEAKER/UTTERANCE.align (alignments.zip)."""
    root = tmp_path / "gridcorpus"
    for speaker, utterance in (("s1", "bbaf2n"), ("s1", "bbal6n"), ("s2", "lgaz5a")):
        touch(root / speaker / f"{utterance}.mpg")
        touch(root / "alignments" / speaker / f"{utterance}.align", GRID_ALIGN)
    return root


VGGSOUND_CSV = (  # the published vggsound.csv: no header, labels with commas quoted, split train/test
    '---g-f_I2yQ,1,"people marching",test\n'
    '--0PQM4-hqg,30,"waterfall burbling",train\n'
    '-0BIyqJj9ZU,30,"male speech, man speaking",train\n'
    '-0DdlOuIFUI,50,"female singing",train\n'
    '-0Gj8-vB1q4,30,"dog barking",test\n'
)


REF_LINE = "{audio}|feat/clip/{stem}.npy|feat/spk/{stem}.npy|feat/lip/{stem}.npy|feat/sync/{stem}.npy|1 2 3|h ə l"
