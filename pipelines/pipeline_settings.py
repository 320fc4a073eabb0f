"""Settings of the retraining pipeline at compile time: ``CTR_PIPELINE_IMAGE``, ``CTR_PIPELINE_TRAIN_GPUS``."""

from __future__ import annotations

from ctr.settings import CtrSettings, PositiveInt


class PipelineSettings(CtrSettings):
    """What a compiled pipeline spec fixes: the components' image and the train step's GPUs."""

    pipeline_image: str = "ghcr.io/ctr-loop/ctr-pipeline:0.1.0"
    pipeline_train_gpus: PositiveInt = 1  # GPUs of one node; the step runs one process per GPU
