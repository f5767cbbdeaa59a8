"""Write the demo's bundled examples into assets/demo (shapes images, a synthetic video, a chart).

    python scripts/make_demo_assets.py [OUT_DIR]

Deterministic: the files are made by data_pipelines.synthetic with fixed seeds, so running it again
rewrites the same examples (tests/mmrft/demo/test_demo_cli.py checks that the committed ones match).
"""

import sys
from pathlib import Path

from mmrft.demo.examples import ASSETS, make_examples

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ASSETS
    for example in make_examples(out):
        print(f"{out / example.file}  ({example.task}: {example.name})")
    print(f"{out / 'examples.json'}")
