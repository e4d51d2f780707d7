"""parallel-recon: streaming MRI reconstruction for the ISMRMRD/MRD v1 stream protocol."""

__version__ = "0.1.0"

__all__ = ["__version__"]
