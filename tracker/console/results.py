"""A job's result for people: VOD's JSON read leniently (vod-reference.md 6.2 and 6.3) into tags
grouped by kind with the moments they appear, or fingerprint matches with their ranges.

Anything that does not fit is left out here and stays readable in the raw JSON on the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

TAG_KINDS = ("Keyword", "Category", "Person", "Location", "Time")
STRIP = 1000.0  # the width of a timeline strip in SVG units


@dataclass(frozen=True)
class Moment:
    ms: int
    x: float  # along the strip, 0..STRIP

    @property
    def label(self) -> str:
        return clock_text(self.ms / 1000)


@dataclass
class Tag:
    name: str
    moments: list[Moment]
    face_url: str | None = None


@dataclass
class TagGroup:
    kind: str
    tags: list[Tag]


@dataclass
class TagResult:
    groups: list[TagGroup]
    length_ms: int
    length_known: bool  # from VOD's OrigASRData.Duration; else the last moment tagged
    speech: list[tuple[str, str]] = field(default_factory=list)  # (time, text)


@dataclass(frozen=True)
class Range:
    start: float  # seconds
    duration: float

    @property
    def label(self) -> str:
        return f"{clock_text(self.start)}–{clock_text(self.start + self.duration)}"


@dataclass
class Match:
    media_id: str
    similarity: float | None
    ranges: list[tuple[Range | None, Range | None]]  # (in this video, in the matched one)


def clock_text(seconds: float) -> str:
    """`1:02:03.250`, `02:03.250`: a position in a video."""
    minutes, secs = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:06.3f}"
    return f"{minutes:02d}:{secs:06.3f}"


def _parsed(result: Any) -> Any:
    if isinstance(result, str):  # kept as text when it was not clean JSON
        try:
            return json.loads(result)
        except ValueError:
            return None
    return result


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) < 1e12 else None  # no NaN, no huge


def video_tags(result: Any) -> TagResult | None:
    """The tags of an AIVideoTag result, by kind, each with its moments on one strip."""
    data = _parsed(result)
    if not isinstance(data, dict):
        return None
    raw_groups: list[tuple[str, list[tuple[str, list[int], str | None]]]] = []
    longest = 0
    for kind in TAG_KINDS:
        items = data.get(kind)
        if not isinstance(items, list):
            continue
        tags: list[tuple[str, list[int], str | None]] = []
        for item in items:
            if not isinstance(item, dict) or item.get("Tag") is None:
                continue
            times = item.get("Times")
            moments = [
                int(ms)
                for ms in (_number(t) for t in (times if isinstance(times, list) else []))
                if ms is not None and ms >= 0
            ]
            longest = max([longest, *moments])
            face = item.get("FaceUrl")
            linkable = isinstance(face, str) and face.startswith(("https://", "http://"))
            tags.append((str(item["Tag"]), sorted(moments), face if linkable else None))
        if tags:
            raw_groups.append((kind, tags))
    asr = data.get("OrigASRData")
    known = _number(asr.get("Duration")) if isinstance(asr, dict) else None
    length_ms = int(known * 1000) if known and known > 0 else 0
    if length_ms < longest:  # VOD's duration missing, or a moment past it
        known = None
        length_ms = int(longest * 1.02) + 1
    length_ms = max(length_ms, 1)
    groups = [
        TagGroup(
            kind,
            [
                Tag(name, [Moment(ms, STRIP * ms / length_ms) for ms in times], face)
                for name, times, face in tags
            ],
        )
        for kind, tags in raw_groups
    ]
    speech: list[tuple[str, str]] = []
    if isinstance(asr, dict) and isinstance(asr.get("AsrTextList"), list):
        for line in asr["AsrTextList"][:200]:
            if isinstance(line, dict) and isinstance(line.get("Text"), str):
                start = _number(line.get("StartTime"))
                speech.append((clock_text(start / 1000) if start else "", line["Text"]))
    if not groups and not speech:
        return None
    return TagResult(groups, length_ms, known is not None, speech)


def _range(value: Any) -> Range | None:
    if not isinstance(value, dict):
        return None
    start, duration = _number(value.get("Start")), _number(value.get("Duration"))
    if start is None or duration is None:
        return None
    return Range(start, duration)


def dna_matches(result: Any) -> list[Match] | None:
    """The matches of an AIMediaDNA result, most similar first; [] when VOD found none."""
    data = _parsed(result)
    if not isinstance(data, dict):
        return None
    items = data.get("VideoDNA")
    if items is None:
        return [] if "VideoDNA" in data else None
    if not isinstance(items, list):
        return None
    matches: list[Match] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("PrimaryKey"), str):
            continue
        details = item.get("Detail")
        ranges = [
            (_range(d.get("Input")), _range(d.get("Duplication")))
            for d in (details if isinstance(details, list) else [])
            if isinstance(d, dict)
        ]
        matches.append(Match(item["PrimaryKey"], _number(item.get("Similarity")), ranges))
    matches.sort(key=lambda m: -(m.similarity or 0))
    return matches
