"""longmem-etl: move, back up and analyse Longmem memories."""

__version__ = "0.1.0"
