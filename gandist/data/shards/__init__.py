"""The streaming shard reader: WebDataset tar shards -> uint8 batches, in two modes (README, Data).

Training (feed.py) resamples and shuffles per (rank, worker) with fixed-length epochs, and batch k is a pure
function of (seed, k, rank, workers), so no rank waits at an epoch's end and a resumed run reads what the
uninterrupted one read.  Evaluation (eval.py) reads every sample exactly once across ranks and workers.
Corrupt data is logged, skipped and counted, never fatal.  webdataset does the urls, resampling and shuffle;
tar.py reads the members, 15x faster than tarfile.
"""
