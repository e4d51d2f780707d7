"""Reconstruction kernels run inside worker processes: ``reconstruct(kspace, context)``."""

__all__: list[str] = []
