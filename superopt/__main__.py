import sys

from superopt.cli import main

sys.exit(main())
