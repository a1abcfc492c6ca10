"""Imported first by every shard's child in test_scale's inference tests (through
RVOS_KIT_FAULT_PRELOAD of tests/faults/rvos_faults.py): the synthetic driver of test_infer,
which writes dumps in the published format, stands in for model "soc"."""

import dataclasses
import sys

from test_infer import fake_driver

from rvos_kit.stages.rvos.infer import core

sys.modules["rvos_kit.stages.rvos.infer._fake"] = fake_driver("logits")
core.MODELS["soc"] = dataclasses.replace(core.MODELS["soc"], driver="_fake")
