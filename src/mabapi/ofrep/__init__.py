"""OpenFeature: the Remote Evaluation Protocol (OFREP) over experiments, so every
OpenFeature SDK is a mabapi client (flag = experiment, targeting key = unit)."""
