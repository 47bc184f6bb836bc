"""Ray Tune sweeps over any config field (docs/sweeps.md): the sweep file's schema and the
trial configs it expands to (:mod:`tuning.spec`), one trial as a Tune function trainable
(:mod:`tuning.trials`), the Tune experiment (:mod:`tuning.sweep`), the results table
(:mod:`tuning.results`) and the Markdown report (:mod:`tuning.report`)."""
