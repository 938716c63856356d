"""gandist-sweep: a family of runs from one spec, run here or as one SLURM job array; the manifest and how its
members stand belong to gandist.compare, so that compare can follow a sweep it did not start."""
