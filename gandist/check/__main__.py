"""python -m gandist.check --config FILE [key=value ...]: see gandist/check/__init__.py."""
import sys

from gandist.check.cli import main

sys.exit(main())
