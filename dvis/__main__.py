import sys

from dvis.cli import main

sys.exit(main())
