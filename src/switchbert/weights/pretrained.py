"""Where ``load_pretrained`` and the model-directory names used to live; kept so old imports work.

The model directory is ``switchbert.models.directory``; ``load_pretrained`` is ``switchbert.models.build``.
"""

from switchbert.models.build import load_pretrained, save_pretrained
from switchbert.models.directory import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, TrainingInfo, check_state_dict, read_config

__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "TrainingInfo", "check_state_dict", "load_pretrained",
           "read_config", "save_pretrained"]
