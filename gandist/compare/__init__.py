"""gandist-compare: runs and sweeps read back from their own files -- how each stands (status.py), what it
reached (runs.py), one table (table.py) and overlaid curves (figures.py).  Also the sweep manifest's format
(manifest.py), which gandist-sweep writes and this package reads."""
