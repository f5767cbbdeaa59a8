import sys

from mmrft.cli import main

sys.exit(main())
