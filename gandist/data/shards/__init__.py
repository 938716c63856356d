"""The streaming shard reader: WebDataset tar shards (written by gandist-prepare) -> uint8 batches.

`data.urls` is one or more shard patterns separated by ';', each brace-expanded
(`shards/train-{000000..000099}.tar`); a pattern may be a local path, an http(s):// URL or a
`pipe:COMMAND` whose stdout is the tar (`pipe:aws s3 cp s3://bucket/train-000000.tar -`).  With
`data.cache_dir`, remote shards are downloaded there once and read locally afterwards.

Two modes:
- training (`feed.ShardFeed`): every (rank, DataLoader worker) resamples shards with replacement and
  shuffles samples through a buffer, seeded by (seed, epoch, rank, worker).  An epoch is a fixed
  number of batches, the same on every rank (total samples // global batch), so no rank waits for
  another at the end of an epoch.  Batch k of a rank comes from worker k mod W and is a pure function
  of (seed, k, rank, W): a run resumed at D-step j reads exactly the batches the uninterrupted run read.
- evaluation (`eval.eval_batches`): shards are split across ranks (shard i -> rank i mod world) and then
  across DataLoader workers (`webdataset.split_by_worker`), read in order: every sample exactly once.

The epoch length comes from the index.json gandist-prepare writes beside the shards (local or http);
without one, local shards are counted from their tar headers and remote ones estimated from the first.

Workers decode PNG (or, for shards written with --encoding raw, copy the .npy array) to uint8
(C, H, W) tensors; ShardFeed converts to [-1, 1] on the device.  A corrupt sample or an unreadable
shard is logged and skipped, and counted (`ShardFeed.skipped`, `EvalBatches.skipped`); it never stops
training.  A worker that cannot read a single good sample from any shard raises an error naming its
rank, host and the last problem instead of hanging.

One module per concern, lower ones first:
    io.py       urls, opening a shard (file, http, pipe:), the download cache
    tar.py      the one tar reader (a fifteenth of the CPU time of Python's tarfile)
    raw.py      the raw encoding: a sample's uint8 (C, H, W) array as .npy, written and read safely
    decode.py   what a sample must look like (Spec), PNG checking and decoding, collating
    index.py    index.json (finding it, checking it against the config), counting samples
    reader.py   the per-worker reader: shards -> decoded samples, problems logged, skipped, counted
    streams.py  the train and eval IterableDatasets and the DataLoader around them
    eval.py     evaluation mode: every sample once (EvalBatches)
    feed.py     training mode: ShardFeed, batch(j) for D-step j

webdataset does the brace expansion, pipe:/http opening, shard resampling, splitting by worker, the
shuffle buffer and grouping tar members into samples; the tar members themselves are read by tar.py.
"""
