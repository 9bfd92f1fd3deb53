"""Cost-model layer: time, memory and energy of one step of a model on a deployment of a chip."""

from tokenfleet.perf.auto import auto_deployment, layout
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.predict import Prediction, Workload, predict_static
from tokenfleet.perf.step import BatchShape, Efficiency, StepModel, StepTime, batch_shape

__all__ = [
    "BatchShape", "Deployment", "Efficiency", "Prediction", "StepModel", "StepTime", "Workload",
    "auto_deployment", "batch_shape", "layout", "predict_static",
]
