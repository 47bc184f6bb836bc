"""Ray Tune sweeps over any config field (:mod:`tuning.sweep`) and their reports
(:mod:`tuning.report`). See docs/sweeps.md."""
