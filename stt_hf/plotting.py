"""The one matplotlib set-up of the package: figures are written to files, never shown."""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot` on the Agg backend: PNG files only, so no display or GUI toolkit is needed
    (training machines, CI, the demo's server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
