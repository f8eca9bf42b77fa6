"""`MetricScript`: what every evaluate module of stt_hf shares, so each script holds only its scoring.

A script subclasses it (or `CaptionMetric` / `SceneMetric`), sets `DESCRIPTION` and `KWARGS_DESCRIPTION`
and writes `example_features` and `score`. The class is abstract, so `evaluate.load` (which takes the first
concrete `evaluate.Metric` in a script) picks the script's own class.
"""

from __future__ import annotations

import abc

import datasets
import evaluate


class MetricScript(evaluate.Metric, abc.ABC):
    """An `evaluate` metric whose inputs are checked before evaluate sees them."""

    DESCRIPTION: str  # one line: what the score is
    KWARGS_DESCRIPTION: str  # Args / Returns / Examples, as evaluate documents a metric's inputs
    FORMAT: str | None = None  # how evaluate hands the inputs to `score` (None: Python lists)

    def _info(self):
        return evaluate.MetricInfo(description=self.DESCRIPTION, citation="",
                                   inputs_description=self.KWARGS_DESCRIPTION,
                                   features=self.example_features(), format=self.FORMAT)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the metric; empty, mismatched or malformed inputs raise ValueError or TypeError."""
        # evaluate picks the feature option from the first example (an IndexError on empty lists) and
        # casts before scoring: checked first, for an error that names the problem.
        if predictions is not None and references is not None:
            predictions, references = self.check_inputs(predictions, references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def check_inputs(self, predictions, references) -> tuple:
        """(predictions, references) as evaluate should see them; raise on bad input."""
        return predictions, references

    def _compute(self, predictions, references, **options):
        return self.score(predictions, references, **options)

    @abc.abstractmethod
    def example_features(self):
        """The `datasets.Features` (or list of options) of one example."""

    @abc.abstractmethod
    def score(self, predictions, references, **options) -> dict:
        """{score name: value} of the checked inputs."""


def class_id_features() -> datasets.Features:
    """One predicted and one true class id per example."""
    return datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


def label_map_features() -> datasets.Features:
    """One predicted and one true per-pixel label map (H x W class ids) per example."""
    maps = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    return datasets.Features({"predictions": maps, "references": maps})
