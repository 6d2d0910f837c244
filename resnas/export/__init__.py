"""Export an architecture as a standalone PyTorch module (and its weights)."""

from resnas.export._api import ExportResult, export_module, export_program, export_trial
from resnas.export._source import class_name_for, export_source

__all__ = ["ExportResult", "class_name_for", "export_module", "export_program", "export_source", "export_trial"]
