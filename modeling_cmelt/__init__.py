"""C-MELT for transformers. Importing the package registers the classes with the Auto factories, so a saved
folder loads with `AutoModel.from_pretrained(folder)`; without the package installed it loads with
`trust_remote_code=True` from the code copied into the folder."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining

from .configuration_cmelt import CMELTConfig, CMELTECGConfig
from .feature_extraction_cmelt import CMELTFeatureExtractor
from .modeling_cmelt import (
    CMELTECGModel,
    CMELTForECGClassification,
    CMELTForPreTraining,
    CMELTModel,
    CMELTPreTrainedModel,
)
from .pipeline_cmelt import ZeroShotECGClassificationPipeline, register_pipeline
from .processing_cmelt import CMELTProcessor

register_pipeline()
AutoConfig.register(CMELTConfig.model_type, CMELTConfig, exist_ok=True)
AutoConfig.register(CMELTECGConfig.model_type, CMELTECGConfig, exist_ok=True)
AutoModel.register(CMELTConfig, CMELTModel, exist_ok=True)
AutoModel.register(CMELTECGConfig, CMELTECGModel, exist_ok=True)
AutoModelForPreTraining.register(CMELTConfig, CMELTForPreTraining, exist_ok=True)
AutoModelForAudioClassification.register(CMELTConfig, CMELTForECGClassification, exist_ok=True)

__all__ = [
    "CMELTConfig",
    "CMELTECGConfig",
    "CMELTFeatureExtractor",
    "CMELTProcessor",
    "CMELTPreTrainedModel",
    "CMELTECGModel",
    "CMELTModel",
    "CMELTForPreTraining",
    "CMELTForECGClassification",
    "ZeroShotECGClassificationPipeline",
]
