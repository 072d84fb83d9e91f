"""switchbert: Switch-BERT (ECCV 2022) and the multimodal BERTs it is compared with, in PyTorch.

Public API::

    import switchbert
    model = switchbert.create_model("switchbert-base", bert_dir="path/to/bert-base-uncased")
    out = model(batch)                  # batch: switchbert.Batch -> switchbert.EncoderOutput
    model.save_pretrained("run/model")
    model = switchbert.load_pretrained("run/model")
    vqa = switchbert.load_task_model("runs/vqa")          # encoder + head + answers of a fine-tuned run
    vqa.answer(["what is on the table?"], [regions])    # regions: switchbert.Processor's region records
"""

from switchbert.batch import Batch
from switchbert.config import MODES, ModelConfig
from switchbert.outputs import EncoderOutput, LayerRoute
from switchbert.models import LxmertModel, SwitchBertModel, ViLBertModel, VLModel, load_pretrained, save_pretrained
from switchbert.models import build_model as create_model
from switchbert.presets import PRESETS, get_config
from switchbert.processor import Processor
from switchbert.task_model import TaskModel, load_task_model
from switchbert.temperature import TemperatureSchedule, temperature_at

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "PRESETS",
    "Batch",
    "EncoderOutput",
    "LayerRoute",
    "LxmertModel",
    "ModelConfig",
    "SwitchBertModel",
    "Processor",
    "TaskModel",
    "TemperatureSchedule",
    "VLModel",
    "ViLBertModel",
    "create_model",
    "get_config",
    "load_pretrained",
    "load_task_model",
    "save_pretrained",
    "temperature_at",
]
