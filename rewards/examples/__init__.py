"""Worked examples of reward plugins (see docs/rewards.md). Not registered: name them by spec, e.g.
``rewards.examples.point_in_box:point_in_box`` or ``path/to/point_in_box.py:point_in_box``."""
