"""parallel-recon: streaming MRI reconstruction for the ISMRMRD/MRD v1 stream protocol.

The Python API (:mod:`parallel_recon.api`) is re-exported here: ``reconstruct``,
``read_images``, ``write_images``, ``export``.  Importing the package stays cheap; the engine
and its dependencies are imported by the first call.
"""

from . import api as _api
from .api import *  # noqa: F403  (the API's __all__, re-exported as it grows)

__version__ = "0.1.0"

__all__ = ["__version__", *_api.__all__]
