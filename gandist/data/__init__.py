"""Data: the embedded synthetic dataset, readers of the real datasets' on-disk formats, the shard
writer (prepare) and the streaming shard reader used by training and evaluation."""
