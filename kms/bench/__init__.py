"""``kms bench``: our figures side by side with the peers, measured in one run.

Machines are noisy; only ratios measured in the same run carry from one run to another.
"""
