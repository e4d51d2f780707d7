"""The package version, in a module of its own so that every room can name it without
importing the package's facade (``parallel_recon/__init__.py`` sits above them all)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
