"""`torchrun --nproc_per_node=N -m mmrft.train --config FILE [...]`: the same as `mmrft train`."""

import sys

from mmrft.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
