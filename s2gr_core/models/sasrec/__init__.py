"""SASRec (Kang & McAuley, 2018) trained with full softmax cross-entropy over all items."""

from s2gr_core.models.sasrec.model import SASRec
from s2gr_core.models.sasrec.train import TrainOutcome, load_model, train_sasrec

__all__ = ["SASRec", "TrainOutcome", "load_model", "train_sasrec"]
