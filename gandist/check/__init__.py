"""gandist-check: before a long job, whether these nodes, GPUs, data and this config will work.

    gandist-check --config configs/wgan_gp_celeba.yaml [key=value ...]             # one process, as training
    torchrun --nproc_per_node 8 -m gandist.check --config configs/wgan_gp_celeba.yaml
    sbatch --nodes=4 --gpus-per-node=8 slurm/check.sh configs/wgan_gp_celeba.yaml     # the job's own layout

Every rank runs every check, in the same order (most of them are collective) and catches what fails on it
alone; what the ranks find is gathered, and rank 0 prints one table.  Exit 0: every check passed (warnings
allowed), 1: a check failed (its rows name the rank and host), 2: bad input (the config).  One module per
concern, in the order the checks run:

    ranks.py        each rank's host, device, driver/CUDA/NCCL and memory; processes per node; the same
                    software and the same resolved config on every rank
    collectives.py  an all-reduce of known values is exact; bus bandwidth and latency at a few sizes, between
                    nodes too; what one round of this config communicates, and costs at those figures
    syncbn.py       synchronised BatchNorm on this backend against single-process BatchNorm on the global batch
    data.py         every rank opens the data, decodes its first samples, reads at some rate
    outputs.py      output.dir: writable from every rank, the same directory on every node, room to checkpoint
    evaluation.py   the Inception weights eval.metrics needs
    rounds.py       a few real training rounds: images/s, peak memory, precision, the time of train.steps
    report.py       a row of the table, a rank's finding, the table itself (rich on a terminal, else plain lines)
    cli.py          the command
"""
