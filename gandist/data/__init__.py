"""Data, one module per concern: what training reads (feed), the embedded dataset (synthetic), writing shards
(prepare, sources/) and reading them (shards/), which share only the leaves tensors and errors.
"""
