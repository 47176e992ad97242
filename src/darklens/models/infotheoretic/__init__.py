"""The information-theoretic detector (``infotheoretic``), the project's own method.

One room per job: ``model`` (the detector and its loss), ``bank`` (memory bank and the scores
read from it), ``selection`` (the label-free choice of score, its AUROC and Spearman),
``collapse`` (the collapse watch), ``anomalies`` (labelled and pseudo-anomalies). Design and
development measurements: docs/infotheoretic.md.
"""

from darklens.models.infotheoretic.anomalies import select_labelled
from darklens.models.infotheoretic.collapse import CollapseWarning
from darklens.models.infotheoretic.model import ENCODERS, SCORES, InfoTheoretic
from darklens.models.infotheoretic.selection import auroc, spearman

__all__ = ["ENCODERS", "SCORES", "CollapseWarning", "InfoTheoretic", "auroc",
           "select_labelled", "spearman"]
