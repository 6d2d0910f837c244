"""Export an architecture as a standalone PyTorch module (and its weights)."""

from resnas.export._source import class_name_for, export_source

__all__ = ["class_name_for", "export_source"]
