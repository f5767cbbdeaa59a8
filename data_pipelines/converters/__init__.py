"""Dataset converters: real formats -> JSONL records in the DESIGN schema (``mmrft data prepare``).

Each converter writes its JSONL atomically (temporary name, then rename), places media by symlink,
copy or absolute path, and returns a ``ConvertResult`` (records, classes, skipped with reasons).
"""

from data_pipelines.converters.chart import convert_chart
from data_pipelines.converters.classification import convert_classification
from data_pipelines.converters.coco import convert_coco
from data_pipelines.converters.common import ConvertResult
from data_pipelines.converters.jsonl import convert_jsonl
from data_pipelines.converters.refcoco import convert_refcoco
from data_pipelines.converters.temporal import convert_temporal

__all__ = [
    "ConvertResult",
    "convert_chart",
    "convert_classification",
    "convert_coco",
    "convert_jsonl",
    "convert_refcoco",
    "convert_temporal",
]
