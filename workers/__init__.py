"""Reconstruction kernels run inside worker processes: ``reconstruct(kspace, context)``.

Installed as ``parallel_recon.workers`` (the folder sits at the repository's top level so
that kernels stay apart from the engine: they depend only on :mod:`.api`).
"""

__all__: list[str] = []
