"""The MRD stream codecs: MRD v1 (ISMRMRD) layouts, messages, reader and writer, and the
MRD v2 (yardl) reader and writer beside them (:mod:`.mrd2`), both reading and writing the
same message objects; :mod:`.generations` picks one by a stream's first bytes or by name."""

from .decode import DEFAULT_LIMITS, Limits, StreamReader, after_close_warning, decode_image
from .encode import StreamWriter, encode_buffers, encode_message, message_id_bytes
from .generations import (
    FORMAT_NAMES,
    GENERATIONS,
    MessageWriter,
    open_reader,
    open_writer,
)
from .layout import (
    ACQUISITION_HEADER_DTYPE,
    CONFIG_FILE_SIZE,
    DATA_TYPE_TO_DTYPE,
    DTYPE_TO_DATA_TYPE,
    ENCODING_COUNTERS_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    AcquisitionFlag,
    ImageType,
    MessageId,
    has_flag,
)
from .messages import (
    Acquisition,
    Close,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    Message,
    NDArray,
    Text,
    Waveform,
    copy_record,
    new_acquisition_head,
    new_image_head,
    new_waveform_head,
)
from .mrd2 import Notes
from .skip import message_remainder, skip_message

__all__ = [
    "ACQUISITION_HEADER_DTYPE",
    "FORMAT_NAMES",
    "GENERATIONS",
    "MessageWriter",
    "open_reader",
    "open_writer",
    "CONFIG_FILE_SIZE",
    "DATA_TYPE_TO_DTYPE",
    "DEFAULT_LIMITS",
    "DTYPE_TO_DATA_TYPE",
    "ENCODING_COUNTERS_DTYPE",
    "IMAGE_HEADER_DTYPE",
    "WAVEFORM_HEADER_DTYPE",
    "Acquisition",
    "AcquisitionFlag",
    "Close",
    "ConfigFile",
    "ConfigText",
    "Header",
    "Image",
    "ImageType",
    "Limits",
    "Message",
    "MessageId",
    "NDArray",
    "StreamReader",
    "StreamWriter",
    "Text",
    "Waveform",
    "after_close_warning",
    "decode_image",
    "encode_buffers",
    "copy_record",
    "encode_message",
    "has_flag",
    "message_id_bytes",
    "message_remainder",
    "new_acquisition_head",
    "new_image_head",
    "new_waveform_head",
    "Notes",
    "skip_message",
]
