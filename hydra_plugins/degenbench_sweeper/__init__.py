"""degenbench's Hydra plugins: the `distinct` sweeper (distinct_sweeper.py)."""
