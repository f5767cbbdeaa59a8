"""Constants shared by the demo tests (a module of its own: `conftest` is not importable by name)."""

from pathlib import Path

# A 150x100 image with a red square at [30, 20, 90, 80]. The model sees it smart-resized to 140x112
# (sx = 140/150, sy = 112/100), where the square is [28, 22.4, 84, 89.6].
SQUARE = [30, 20, 90, 80]
SQUARE_MODEL = [28, 22.4, 84, 89.6]
ROOT = Path(__file__).resolve().parents[3]
