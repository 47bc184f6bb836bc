"""The objective: f-divergences and their pseudo-rewards, the f-DPG loss, sequence
log-probabilities, and the importance-sampled estimators.  Pure mathematics on tensors;
imports nothing else of the project (tests/test_layers.py)."""
