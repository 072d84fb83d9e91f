"""ModelConfig (config.py) refuses numbers that would make a broken model."""

from __future__ import annotations

import pytest

from switchbert.config import ModelConfig


@pytest.mark.parametrize("field", ["layer_norm_eps", "initializer_range"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_model_config_refuses_bad_numbers(field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        ModelConfig(**{field: value})
