"""Bridges to other frameworks, each an optional module with its own extra.

* :mod:`hyperkd.integrations.terratorch` (``pip install 'hyperkd[terratorch]'``): importing it
  registers the backbone ``hyperkd_mae`` in TerraTorch's ``BACKBONE_REGISTRY``, so a saved
  student fine-tunes with TerraTorch's decoders, necks, tasks and ``terratorch fit``.

Nothing here is imported by ``import hyperkd``; a module whose framework is missing says which
extra to install.
"""
