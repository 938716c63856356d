import sys

from gandist.compare.cli import main

sys.exit(main())
