"""The target p(x) = P(x) / Z: scorers of features, the energy-based target
P(x) = a(x) exp(lambda . phi(x)) (or a(x) b(x)) and the scoring of a batch against it.  No Ray."""
