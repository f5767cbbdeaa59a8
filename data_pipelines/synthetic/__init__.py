"""Seeded synthetic tasks (the embedded default data): shapes, and later video and charts."""

from data_pipelines.synthetic.shapes import SHAPE_TASKS, write_shapes_dataset

__all__ = ["SHAPE_TASKS", "write_shapes_dataset"]
