"""``parallel-recon profile``: a ``--trace`` file drawn as a PNG timeline.

One Gantt row per process (supervisor, reader, workers, writer, in that order), each span a
bar coloured by what the process was doing; nested spans (a kernel call inside its unit) are
drawn as narrower bars over their parent, waits in light grey.  Below, the input and output
throughput over time (MB/s), from the trace's byte counters.  Drawn with Pillow, which the
package already uses for ``view``: the chart is bars and lines, which needs no plotting
library.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..errors import InputFileError

__all__ = ["COLOURS", "Timeline", "Track", "load_trace", "render_timeline", "throughput"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "startup": (142, 107, 191),
    "read": (59, 125, 216),
    "unit": (242, 184, 114),
    "kernel": (228, 87, 46),
    "write": (46, 158, 91),
    "wait": (214, 214, 214),
    "shutdown": (150, 150, 150),
}
"""Span category -> bar colour (anything else is dark grey)."""
_OTHER = (110, 110, 110)
_LEGEND = {
    "startup": "start-up",
    "read": "read + place",
    "unit": "unit in a worker",
    "kernel": "kernel",
    "write": "write / deliver",
    "wait": "wait",
}
_SERIES = {"input": (59, 125, 216), "output": (46, 158, 91)}


@dataclass
class Track:
    """One process: its name, sort index and spans ``(start s, stop s, depth, category)``."""

    pid: int
    name: str
    order: int
    spans: list[tuple[float, float, int, str]] = field(default_factory=list)


@dataclass
class Timeline:
    """What the PNG shows, in seconds."""

    tracks: list[Track]
    counters: dict[str, list[tuple[float, float]]]
    """Counter name -> ``(time s, MB so far)`` samples, in time order."""
    start: float
    stop: float
    title: str


def _fail(path: str, problem: str) -> InputFileError:
    return InputFileError(
        f"{path}: expected a trace-event JSON file (mrd_stream_recon --trace), {problem}"
    )


def _events(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The events and the ``otherData`` of a trace file (either JSON form)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(f"cannot open input {path!r}: no such file") from None
    except OSError as exc:
        raise InputFileError(f"cannot open input {path!r}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"found invalid JSON ({exc})") from None
    events = document.get("traceEvents") if isinstance(document, dict) else document
    other = document.get("otherData") if isinstance(document, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise _fail(path, "found no traceEvents list")
    for index, event in enumerate(events):
        missing = [key for key in ("ph", "ts", "pid") if key not in event]
        if missing:
            raise _fail(path, f"found event {index} without {', '.join(missing)}")
    return events, other if isinstance(other, dict) else {}


def _depths(spans: list[tuple[float, float, str]]) -> list[tuple[float, float, int, str]]:
    """Nesting depth of each span (spans of one track nest, as the engine writes them)."""
    out = []
    stack: list[float] = []
    for start, stop, category in sorted(spans, key=lambda s: (s[0], -s[1])):
        while stack and stack[-1] <= start + 1e-7:
            stack.pop()
        out.append((start, stop, len(stack), category))
        stack.append(stop)
    return out


def load_trace(path: str) -> Timeline:
    """Read a ``--trace`` file (or any Chrome trace-event JSON with complete events)."""
    events, other = _events(path)
    names: dict[int, str] = {}
    orders: dict[int, int] = {}
    spans: dict[int, list[tuple[float, float, str]]] = {}
    counters: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        pid, kind = int(event["pid"]), event["ph"]
        args = event.get("args") or {}
        if kind == "M" and event.get("name") == "process_name":
            names[pid] = str(args.get("name", pid))
        elif kind == "M" and event.get("name") == "process_sort_index":
            orders[pid] = int(args.get("sort_index", 0))
        elif kind == "X":
            start = float(event["ts"]) / 1e6
            spans.setdefault(pid, []).append(
                (start, start + float(event.get("dur", 0)) / 1e6, str(event.get("cat", "")))
            )
        elif kind == "C":
            value = next(iter(args.values()), 0.0) if args else 0.0
            counters.setdefault(str(event.get("name")), []).append(
                (float(event["ts"]) / 1e6, float(value))
            )
    if not spans:
        raise _fail(path, "found no spans (complete events, ph X)")
    tracks = [
        Track(pid, names.get(pid, f"process {pid}"), orders.get(pid, 500), _depths(found))
        for pid, found in spans.items()
    ]
    tracks.sort(key=lambda t: (t.order, t.pid))
    times = [s[0] for t in tracks for s in t.spans] + [s[1] for t in tracks for s in t.spans]
    for samples in counters.values():
        samples.sort()
    title = Path(path).name
    if other:
        title = (
            f"{other.get('command', '')} --recon {other.get('kernel', '?')} --workers "
            f"{other.get('workers', '?')}: {other.get('input_bytes', 0) / 1e6:.0f} MB in, "
            f"{other.get('output_bytes', 0) / 1e6:.1f} MB out, "
            f"{other.get('wall_s', 0):.2f} s from start-up to the last image"
        )
    return Timeline(tracks, counters, min(times), max(times), title)


def throughput(
    samples: list[tuple[float, float]], start: float, stop: float, bins: int
) -> list[float]:
    """MB/s in each of ``bins`` equal intervals of ``[start, stop]``.

    The counters are cumulative MB at some instants; between two samples the bytes are
    spread evenly (linear interpolation of the cumulative curve).
    """
    if len(samples) < 2 or stop <= start:
        return [0.0] * bins
    times = [t for t, _ in samples]
    values = [v for _, v in samples]

    def cumulative(at: float) -> float:
        if at <= times[0]:
            return values[0]
        if at >= times[-1]:
            return values[-1]
        lo, hi = 0, len(times) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if times[mid] <= at:
                lo = mid
            else:
                hi = mid
        span = times[hi] - times[lo]
        share = (at - times[lo]) / span if span > 0 else 1.0
        return values[lo] + share * (values[hi] - values[lo])

    width = (stop - start) / bins
    edges = [cumulative(start + i * width) for i in range(bins + 1)]
    return [(edges[i + 1] - edges[i]) / width for i in range(bins)]


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _tick_step(span: float, wanted: int) -> float:
    """A 1-2-5 step that gives about ``wanted`` ticks over ``span``."""
    raw = span / max(wanted, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def render_timeline(timeline: Timeline, width: int = 1400) -> Image.Image:
    """The PNG: a Gantt row per process, then input/output MB/s over time."""
    font, small = _font(14), _font(12)
    left, right, top = 150, 20, 56
    row, plot_height, axis = 30, 180, 24
    gantt_bottom = top + row * len(timeline.tracks)
    plot_top = gantt_bottom + axis + 36
    height = plot_top + plot_height + axis + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    start, stop = timeline.start, timeline.stop
    scale = (width - left - right) / max(stop - start, 1e-9)

    def x_of(t: float) -> float:
        return left + (t - start) * scale

    draw.text((left, 8), timeline.title, fill="black", font=font)
    legend_x = left
    for category, label in _LEGEND.items():
        draw.rectangle((legend_x, 32, legend_x + 12, 44), fill=COLOURS[category])
        draw.text((legend_x + 16, 31), label, fill="black", font=small)
        legend_x += 30 + int(draw.textlength(label, font=small))
    for index, track in enumerate(timeline.tracks):
        y = top + index * row
        if index % 2:
            draw.rectangle((left, y, width - right, y + row), fill=(247, 247, 247))
        draw.text((8, y + 8), track.name, fill="black", font=font)
        for begin, end, depth, category in track.spans:
            inset = 3 + 5 * depth
            if inset * 2 >= row - 2:
                continue
            box = (x_of(begin), y + inset, max(x_of(end), x_of(begin) + 1), y + row - inset)
            draw.rectangle(box, fill=COLOURS.get(category, _OTHER))
    step = _tick_step(stop - start, 10)
    first = math.ceil(start / step) * step
    ticks = [first + i * step for i in range(int((stop - first) / step) + 1)]
    for bottom in (gantt_bottom, plot_top + plot_height):
        draw.line((left, bottom, width - right, bottom), fill="black")
        for tick in ticks:
            x = x_of(tick)
            draw.line((x, bottom, x, bottom + 4), fill="black")
            draw.text((x - 12, bottom + 6), f"{tick:g} s", fill="black", font=small)
    _draw_throughput(draw, timeline, (left, plot_top, width - right, plot_height), small)
    return image


def _draw_throughput(
    draw: ImageDraw.ImageDraw,
    timeline: Timeline,
    frame: tuple[int, int, int, int],
    font: Any,
) -> None:
    left, top, right, height = frame
    bins = max(20, min(200, (right - left) // 6))
    rates = {
        name: throughput(samples, timeline.start, timeline.stop, bins)
        for name, samples in timeline.counters.items()
        if name in _SERIES
    }
    peak = max([max(r) for r in rates.values()] + [1.0])
    step = _tick_step(peak, 4)
    ceiling = math.ceil(peak / step) * step
    bottom = top + height
    draw.text((8, top - 20), "throughput, MB/s", fill="black", font=font)
    value = 0.0
    while value <= ceiling + 1e-9:
        y = bottom - value / ceiling * height
        draw.line((left, y, right, y), fill=(225, 225, 225))
        label = f"{value:g}"
        draw.text((left - 8 - draw.textlength(label, font=font), y - 7), label, fill="black",
                  font=font)  # fmt: skip
        value += step
    width = (right - left) / bins
    for name, series in rates.items():
        points = []
        for i, rate in enumerate(series):
            y = bottom - rate / ceiling * height
            points += [(left + i * width, y), (left + (i + 1) * width, y)]
        draw.line(points, fill=_SERIES[name], width=2)
    legend_x = left + 8
    for name, colour in _SERIES.items():
        if name in rates:
            draw.line((legend_x, top + 8, legend_x + 18, top + 8), fill=colour, width=3)
            draw.text((legend_x + 22, top + 1), name, fill="black", font=font)
            legend_x += 80
