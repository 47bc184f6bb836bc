"""Training: the controller of one f-DPG step, the batch that flows through it, the metrics
registry, the run directory, evaluation, trackers and the single-process runner.  No Ray."""
