"""ImageHeaders and meta attributes for reconstructed images.

Images must say where they are (geometry), what they are (counters, type, series) and when
they were measured, so that viewers and DICOM converters downstream can place them.  All of
it comes from the unit's reference acquisition and the plan; nothing depends on which worker
ran the unit, so identical input gives identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from parallel_recon.protocol import Image, ImageType, new_image_head
from parallel_recon.workers.api import ReconContext

__all__ = [
    "COPIED_FIELDS",
    "COUNTER_FIELDS",
    "PHASE_WINDOW",
    "display_window",
    "format_meta_value",
    "image_head",
    "image_meta",
    "make_image",
    "serialize_meta",
]

COPIED_FIELDS = (
    "measurement_uid",
    "position",
    "read_dir",
    "phase_dir",
    "slice_dir",
    "patient_table_position",
    "acquisition_time_stamp",
    "physiology_time_stamp",
)
"""AcquisitionHeader fields copied unchanged into the ImageHeader."""

COUNTER_FIELDS = ("average", "slice", "contrast", "phase", "repetition", "set")
"""Encoding counters (``idx.*`` in the acquisition) copied into the ImageHeader."""

MetaValue = str | int | float | Sequence[str | int | float]


def _escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as XML entities (what ``xml.sax.saxutils.escape`` does, without
    its import of urllib and http: a worker's start-up pays for every module)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def image_head(context: ReconContext, image_type: ImageType) -> np.void:
    """An ImageHeader filled from the reference acquisition and the plan.

    ``data_type``, ``matrix_size``, ``channels`` and ``attribute_string_len`` are set later
    from the payload (:meth:`Image.sync_head`); ``image_index`` stays 0 because the writer
    numbers images in output order; ``flags`` stay 0.
    """
    acq = context.reference_head
    head = new_image_head()
    for name in COPIED_FIELDS:
        head[name] = acq[name]
    for name in COUNTER_FIELDS:
        head[name] = acq["idx"][name]
    head["field_of_view"] = context.space.recon_fov
    head["image_type"] = int(image_type)
    head["image_series_index"] = context.plan.series_index
    return head


def format_meta_value(value: str | int | float) -> str:
    """Text of one meta value: floats as the shortest float32 repr (``0``, ``0.70710677``)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return np.format_float_positional(np.float32(value), trim="-")
    return str(value)


def serialize_meta(meta: Mapping[str, MetaValue]) -> str:
    """ISMRMRD meta attribute XML, byte for byte as ``ismrmrd.Meta.serialize`` writes it.

    Keys keep their insertion order; a sequence value becomes several ``<value>`` elements.
    """
    if not meta:
        return ""
    parts = ["<?xml version='1.0' encoding='UTF-8'?>\n<ismrmrdMeta>"]
    for name, value in meta.items():
        values = [value] if isinstance(value, (str, int, float)) else list(value)
        parts.append(f"<meta><name>{_escape(name)}</name>")
        parts.extend(f"<value>{_escape(format_meta_value(v))}</value>" for v in values)
        parts.append("</meta>")
    parts.append("</ismrmrdMeta>")
    return "".join(parts)


PHASE_WINDOW = (0.0, 2 * math.pi)
"""(WindowCenter, WindowWidth) of phase images: -pi..pi, whatever values the image holds."""


def display_window(data: np.ndarray, image_type: int = ImageType.MAGNITUDE) -> tuple[float, float]:
    """(WindowCenter, WindowWidth) a viewer should open ``data`` with.

    Phase (radians) gets the symmetric -pi..pi: a window on the values' range would start at
    0 and show the object, whose phase is near 0, half black.  Other images span 0 to the
    largest magnitude.
    """
    if int(image_type) == ImageType.PHASE:
        return PHASE_WINDOW
    magnitude = np.abs(data)
    top = float(magnitude.max()) if magnitude.size else 0.0
    return top / 2, top


def image_meta(
    context: ReconContext,
    history: Sequence[str],
    data: np.ndarray,
    image_type: int = ImageType.MAGNITUDE,
) -> dict[str, MetaValue]:
    """The meta attributes every image carries.

    ``WindowCenter``/``WindowWidth`` come from :func:`display_window`, so that viewers open
    the image with a sensible contrast.
    """
    acq = context.reference_head
    centre, width = display_window(data, image_type)
    return {
        "DataRole": "Image",
        "ImageProcessingHistory": list(history),
        "ImageRowDir": [float(v) for v in acq["read_dir"]],
        "ImageColumnDir": [float(v) for v in acq["phase_dir"]],
        "WindowCenter": centre,
        "WindowWidth": width,
    }


def make_image(
    data: np.ndarray,
    context: ReconContext,
    image_type: ImageType,
    history: Sequence[str],
    extra_meta: Mapping[str, MetaValue] | None = None,
) -> Image:
    """A complete Image message from ``data`` ``[channels, z, y, x]`` and the unit's context."""
    meta = image_meta(context, history, data, image_type)
    meta.update(extra_meta or {})
    return Image.from_array(data, serialize_meta(meta), image_head(context, image_type))
