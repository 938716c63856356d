import sys

from gandist.sweep.cli import main

sys.exit(main())
