"""Only a file's own bytes may be decoded: an allowlist of container signatures, checked before any decoder opens it.

FFmpeg picks a demuxer from a file's content, not its name, and some demuxers open other files or URLs named
inside the file: an HLS playlist (`#EXTM3U`), an ffconcat list, a DASH manifest, an SDP description. A manifest
row pointing at such a file under the data root would make decoding read files outside the root. So every
decode path (video, audio, the header probe, `generate`'s input video) first sniffs the first bytes and accepts
only self-contained containers whose signature sits at the start of the file, where FFmpeg's probe finds it
(a signature at byte 0 outscores every text format, whose probes need their marker at byte 0 too):

  ISO-BMFF / QuickTime (mp4, mov, m4a, 3gp: an ftyp, moov, mdat, free, skip or wide box first), Matroska / WebM
  (EBML), RIFF WAVE / AVI and RF64 / BW64, MPEG-TS (0x47 every 188 bytes, or every 192 for M2TS), MPEG-PS,
  FLAC, Ogg, MPEG audio and ADTS AAC (frame sync), AIFF, CAF, FLV, ASF/WMV, WavPack, Sun AU.

An ID3v2 tag is skipped (FFmpeg's probe skips it too) and what follows must be on the list. Anything else is
refused; text that names other files gets the clearer reason `indirect_media`. This is an allowlist, not a
denylist: a format FFmpeg can follow that is missing here is refused as `unreadable_media`, never decoded.
Reading a header is not decoding, so this lives with the manifests (`manifest validate --strict` uses it too).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Iterator, Optional

MAX_MOOV_BYTES = 64 << 20  # a larger ISO-BMFF index is not read for stated durations
HEAD_BYTES = 4096  # enough for two TS packets after an ID3 tag of any usual size; ID3 tags are skipped by seeking

# Line starts of text formats whose demuxers open other files or URLs: HLS, ffconcat, DASH/SMIL/ASX (XML), PLS,
# SDP. Only for the reject reason: the allowlist alone decides what is decoded.
INDIRECTION_MARKERS = (b"#extm3u", b"#extinf", b"ffconcat", b"file ", b"<?xml", b"<mpd", b"<smil", b"<asx",
                       b"[playlist]", b"v=0")


class NotMedia(ValueError):
    """A file that is not a self-contained media container; `reason` is `indirect_media` or `unreadable_media`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _at(head: bytes, offset: int, magic: bytes) -> bool:
    return head[offset:offset + len(magic)] == magic


def _ts(packet: int, first: int) -> Callable[[bytes], bool]:
    def match(head: bytes) -> bool:
        syncs = [first + i * packet for i in range(3) if first + i * packet < len(head)]
        return len(syncs) >= 2 and all(head[s] == 0x47 for s in syncs)
    return match


def _mpeg_audio(head: bytes) -> bool:
    """MPEG-1/2/2.5 layer I-III frame header or ADTS AAC: 11 sync bits, a valid version/layer and bitrate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    if head[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, then ID, layer 00 (reserved for MPEG audio), protection
        return True
    version, layer, bitrate = (head[1] >> 3) & 3, (head[1] >> 1) & 3, head[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15) and (head[2] >> 2) & 3 != 3


# name -> does the head (the first bytes, or the bytes after an ID3 tag) start with this container?
SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "iso-bmff": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"),
    "matroska": lambda h: _at(h, 0, b"\x1a\x45\xdf\xa3"),
    "wav": lambda h: h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] == b"WAVE",
    "avi": lambda h: _at(h, 0, b"RIFF") and h[8:12] == b"AVI ",
    "mpeg-ts": _ts(188, 0),
    "m2ts": _ts(192, 4),
    "mpeg-ps": lambda h: _at(h, 0, b"\x00\x00\x01\xba"),
    "flac": lambda h: _at(h, 0, b"fLaC"),
    "ogg": lambda h: _at(h, 0, b"OggS"),
    "mpeg-audio": _mpeg_audio,
    "aiff": lambda h: _at(h, 0, b"FORM") and h[8:12] in (b"AIFF", b"AIFC"),
    "caf": lambda h: _at(h, 0, b"caff"),
    "flv": lambda h: _at(h, 0, b"FLV\x01"),
    "asf": lambda h: _at(h, 0, bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")),
    "wavpack": lambda h: _at(h, 0, b"wvpk"),
    "au": lambda h: _at(h, 0, b".snd"),
}


def _id3_length(head: bytes) -> Optional[int]:
    """Bytes taken by an ID3v2 tag at the start of head (header, body, optional footer), or None."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF or any(b & 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _looks_indirect(head: bytes) -> bool:
    """Text whose lines name other files or URLs (a playlist, a concat list, a manifest)."""
    lines = [line.strip().lstrip(b"\xef\xbb\xbf").lower() for line in head[:1024].splitlines()]
    return any(line.startswith(INDIRECTION_MARKERS) or b"://" in line for line in lines)


def sniff_container(path: str | Path) -> str:
    """The container name of `path` when its first bytes are on the allowlist; raises NotMedia otherwise.

    Reads at most a few kilobytes (seeking past ID3 tags); never decodes. The file must exist and be readable
    (OSError otherwise, for the caller to report as a missing or unreadable file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        offset = 0
        for _ in range(8):  # several ID3 tags in a row are legal; FFmpeg skips them all
            length = _id3_length(head)
            if length is None:
                break
            offset += length
            f.seek(offset)
            head = f.read(HEAD_BYTES)
    for name, match in SIGNATURES.items():
        if match(head):
            return name
    shown = head[:16].hex(" ")
    where = f" after {offset} bytes of ID3 tags" if offset else ""
    if _looks_indirect(head):
        raise NotMedia("indirect_media", f"{path.name} is a playlist or list of other files (first bytes{where}: "
                                         f"{head[:40]!r}); only self-contained media files are decoded")
    raise NotMedia("unreadable_media", f"{path.name} is not a known media container (first bytes{where}: {shown})")


# ----------------------------------------------------------------------------------------------------------------------
# Stated durations (ISO-BMFF track headers)


def _boxes(data: bytes, start: int = 0, end: Optional[int] = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of the ISO-BMFF boxes laid end to end in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _full_box_times(data: bytes, body: int, *, skip_v0: int, skip_v1: int, has_timescale: bool) -> tuple[int, int]:
    """(timescale or 0, duration) of an mvhd/mdhd (has_timescale) or tkhd full box; versions 0 and 1."""
    version = data[body]
    pos = body + 4 + (skip_v1 if version == 1 else skip_v0)
    timescale = 0
    if has_timescale:
        timescale = struct.unpack(">I", data[pos:pos + 4])[0]
        pos += 4
    duration = struct.unpack(">Q" if version == 1 else ">I", data[pos:pos + (8 if version == 1 else 4)])[0]
    return timescale, duration


def _read_moov(path: Path) -> Optional[bytes]:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box_size, kind = struct.unpack(">I4s", head[:8])
            header = 8
            if box_size == 1 and len(head) == 16:
                box_size, header = struct.unpack(">Q", head[8:16])[0], 16
            elif box_size == 0:
                box_size = size - pos
            if box_size < header:
                return None
            if kind == b"moov":
                if box_size > MAX_MOOV_BYTES:
                    return None
                f.seek(pos + header)
                return f.read(box_size - header)
            pos += box_size
    return None


def stated_track_durations(path: str | Path) -> dict[str, float]:
    """Seconds each kind of track ("audio", "video") says it lasts, the longest track of each kind, from an
    ISO-BMFF file's track headers (tkhd: after edit lists; mdhd when tkhd leaves it unknown). Other containers,
    and tracks stating no duration (fragmented files), give no entry: decoding then cannot be compared with a
    stated length. Reads the index only."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if not SIGNATURES["iso-bmff"](f.read(12)):
                return {}
        moov = _read_moov(path)
    except (OSError, struct.error):
        return {}
    if moov is None:
        return {}
    out: dict[str, float] = {}
    try:
        movie_scale = 0
        for kind, body, _ in _boxes(moov):
            if kind == b"mvhd":
                movie_scale, _ = _full_box_times(moov, body, skip_v0=8, skip_v1=16, has_timescale=True)
        for kind, body, end in _boxes(moov):
            if kind != b"trak":
                continue
            seconds, handler = _track_seconds(moov, body, end, movie_scale)
            name = {b"soun": "audio", b"vide": "video"}.get(handler)
            if name and seconds:
                out[name] = max(out.get(name, 0.0), seconds)
    except (struct.error, IndexError):
        return {}
    return out


def _track_seconds(moov: bytes, start: int, end: int, movie_scale: int) -> tuple[float, Optional[bytes]]:
    seconds, handler, media = 0.0, None, (0, 0)
    for kind, body, box_end in _boxes(moov, start, end):
        if kind == b"tkhd":
            _, duration = _full_box_times(moov, body, skip_v0=16, skip_v1=24, has_timescale=False)
            if movie_scale and duration not in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
                seconds = duration / movie_scale
        elif kind == b"mdia":
            for sub, sub_body, _ in _boxes(moov, body, box_end):
                if sub == b"hdlr":
                    handler = moov[sub_body + 8:sub_body + 12]
                elif sub == b"mdhd":
                    media = _full_box_times(moov, sub_body, skip_v0=8, skip_v1=16, has_timescale=True)
    if not seconds and media[0] and media[1] not in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        seconds = media[1] / media[0]
    return seconds, handler
