"""Data, one module per concern:

    feed.py       make_feed(cfg, rank, world, device): what training reads, batch(j) for D-step j
                  (SyntheticFeed here, shards.feed.ShardFeed for shards)
    tensors.py    uint8 -> [-1, 1] images and labels -> condition vectors (a leaf: torch only)
    synthetic.py  the embedded dataset, a pure function of (seed, index)
    errors.py     DataError, PrepareError, BadSample
    prepare.py    gandist-prepare: a dataset -> WebDataset tar shards + index.json
    sources/      readers of the real datasets' on-disk formats, used by prepare
    shards/       the streaming shard reader, training and evaluation mode (see shards/__init__.py)
"""
