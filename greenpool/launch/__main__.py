import sys

from greenpool.launch.cli import main

sys.exit(main())
