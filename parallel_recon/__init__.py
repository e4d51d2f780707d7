"""parallel-recon: streaming MRI reconstruction for the ISMRMRD/MRD v1 stream protocol.

The Python API (:mod:`parallel_recon.api`) is re-exported here: ``reconstruct``,
``read_images``, ``write_images``, ``export``.  Importing the package stays cheap; the engine
and its dependencies are imported by the first call.
"""

import sys
import types

from . import api as _api
from .api import *  # noqa: F403  (the API's __all__, re-exported as it grows)

__all__ = ["__version__", *_api.__all__]

__version__ = "0.1.0"
"""The release, as pyproject.toml declares it (a test keeps the two equal).  The rooms below
the facade read it from the installed distribution's metadata, so nothing imports upwards."""


class _ApiPackage(types.ModuleType):
    """Keeps ``parallel_recon.export`` the API function once the ``export`` subpackage loads.

    Importing a subpackage binds it to the parent's attribute of the same name, which would
    replace the function ``export(images, path, to=...)`` with the module ``export/`` as soon as
    anything imported the exporters.  The subpackage stays reachable through ``sys.modules``
    and ``from parallel_recon.export.dicom import ...``.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _api.__all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ApiPackage
