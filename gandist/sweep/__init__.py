"""gandist-sweep: a family of runs from one spec (spec.py), run here one or K at a time (here.py) or as one SLURM
job array through slurm/train.sh (slurm.py); its manifest and how its members stand are gandist.compare's."""
