"""Records, image/video loading and resizing, synthetic tasks and dataset converters.

Imports nothing from ``mmrft``: records and vision processing stand alone.
"""
