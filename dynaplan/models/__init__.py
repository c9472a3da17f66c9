"""Learned dynamics: the vectorised ensemble, its normalisers and its trainer."""

from dynaplan.models.ensemble import DynamicsModel, EnsembleLinear
from dynaplan.models.normalizer import Normalizer
from dynaplan.models.trainer import FitResult, ModelTrainer

__all__ = ["DynamicsModel", "EnsembleLinear", "FitResult", "ModelTrainer", "Normalizer"]
