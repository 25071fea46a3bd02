"""Callbacks of a doodl run (use them from LightningCLI YAML by ``class_path``)."""

from .contact_sheet import ContactSheet
from .image_writer import ImageWriter
from .results_table import ResultsTable

__all__ = ["ContactSheet", "ImageWriter", "ResultsTable"]
