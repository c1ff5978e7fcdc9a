"""Data: the prepared chip store, and (in plugins) sensor-specific product readers.

Data flows one way: product -> chip store -> loader -> aligner -> teacher / student.
"""

from hyperkd.data.store import ChipStore, ChipStoreWriter, LabelSpec

__all__ = ["ChipStore", "ChipStoreWriter", "LabelSpec"]
