"""gandist-check: before a long job, whether these nodes, GPUs, data and this config will work (README,
Before a long job).

Every rank runs every check in the same order, because most are collective, and catches what fails on it
alone, so that one broken node is named in a row instead of hanging the rest; rank 0 prints one table.
One module per concern; cli.py runs them in order.
"""
