"""Ray Tune sweeps over the training config: sweep YAML → validated spec → Tune search space → driver per trial.

`spec` parses and checks the YAML, `space` maps it onto Tune domains (and back onto dotted config keys),
`driver` runs one trial's Ray Train job, `runner` assembles the Tuner, `results` and `plots` write what it found.
"""
