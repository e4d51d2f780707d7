"""ISMRMRD HDF5 files <-> MRD messages: the public API of both adapters.

Reading (:func:`read_messages`) yields what ``ismrmrd_hdf5_to_stream`` would send; writing
(:class:`MrdHdf5Writer`) stores a stream the way ``ismrmrd_stream_to_hdf5`` lays it out,
appending to what is already in the file.  The work is split into
:mod:`.layout` (names, dtypes, opening), :mod:`.read` and :mod:`.write`.
"""

from __future__ import annotations

from .layout import list_groups, list_image_series
from .read import (
    acquisition_bytes,
    count_acquisitions,
    count_images,
    count_waveforms,
    iter_segments,
    read_header_xml,
    read_messages,
    segment_buffers,
)
from .write import MrdHdf5Writer

__all__ = [
    "MrdHdf5Writer",
    "acquisition_bytes",
    "count_acquisitions",
    "count_images",
    "count_waveforms",
    "iter_segments",
    "list_groups",
    "list_image_series",
    "read_header_xml",
    "read_messages",
    "segment_buffers",
]
