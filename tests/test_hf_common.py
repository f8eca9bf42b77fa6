"""transformers' own common model tests, run on the STT classes as transformers runs them on ResNet.

The test files are those of the installed transformers version, from its source distribution:
`scripts/setup_env.sh` unpacks its tests/ folder into `<venv>/transformers-tests/<version>/transformers_tests`
(they are not in the wheel, and are not copied into this repository). Without them this module is skipped.

The classes follow transformers' tests/models/resnet/test_modeling_resnet.py: a model tester making a tiny
config and inputs, `ModelTesterMixin` + `ConfigTester` over SttModel, SttForImageClassification and
SttBackbone, `BackboneTesterMixin` over SttBackbone, and `ModelTesterMixin` over the captioning encoder and
the UperNet segmenter with an STT backbone. Each skipped mixin test says why it does not apply to a CNN.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import unittest
from pathlib import Path
from unittest import mock

import pytest
import torch
import transformers
from transformers import PreTrainedConfig
from transformers.models.auto import modeling_auto

from stt_hf import (
    SttBackbone,
    SttConfig,
    SttForImageClassification,
    SttModel,
    SttUperNetConfig,
    SttUperNetForSemanticSegmentation,
    SttVisionConfig,
    SttVisionEncoder,
)

TESTS_ROOT = Path(sys.prefix) / "transformers-tests" / transformers.__version__
if not (TESTS_ROOT / "transformers_tests" / "test_modeling_common.py").is_file():
    pytest.skip(f"transformers {transformers.__version__}'s own test files are not in {TESTS_ROOT}; "
                f"scripts/setup_env.sh fetches them", allow_module_level=True)
pytest.importorskip("parameterized", reason="transformers' test mixins need parameterized (the test extra)")

# The common configuration keywords at values other than their defaults: transformers keeps this dict in
# tests/utils/test_configuration_utils.py, which its source distribution does not ship. Written here for
# PreTrainedConfig's fields (`test_config_common_kwargs_cover_pretrained_config` keeps it complete).
CONFIG_COMMON_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["SttModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}


class ExportTesterMixin:
    """Stands for tests/exporters/test_export.py (torch.export tests), absent from the source distribution;
    ONNX export of these models is tested in test_tasks_export.py."""


class GenerationTesterMixin:
    """Stands for tests/generation/test_utils.py (absent from the source distribution): none of these
    models generates text, so no generation test applies."""


def _import_transformers_tests() -> tuple[types.ModuleType, ...]:
    """test_modeling_common, test_configuration_common, test_backbone_common, with the three modules they
    import that the source distribution lacks provided from here."""
    package = "transformers_tests"
    provided = {"exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
                "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
                "utils.test_configuration_utils": {"config_common_kwargs": CONFIG_COMMON_KWARGS}}
    for name, attrs in provided.items():
        parent = types.ModuleType(f"{package}.{name.partition('.')[0]}")
        parent.__path__ = []
        sys.modules.setdefault(parent.__name__, parent)
        module = types.ModuleType(f"{package}.{name}")
        module.__dict__.update(attrs)
        sys.modules.setdefault(module.__name__, module)
    sys.path.insert(0, str(TESTS_ROOT))
    try:
        return tuple(importlib.import_module(f"{package}.{name}") for name in
                     ("test_modeling_common", "test_configuration_common", "test_backbone_common"))
    finally:
        sys.path.remove(str(TESTS_ROOT))


modeling_common, configuration_common, backbone_common = _import_transformers_tests()
ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester
BackboneTesterMixin = backbone_common.BackboneTesterMixin
floats_tensor, ids_tensor = modeling_common.floats_tensor, modeling_common.ids_tensor


def test_config_common_kwargs_cover_pretrained_config():
    """Every field of PreTrainedConfig is set, at a value that is not its default (as upstream checks)."""
    fields = {f.name: f.default for f in dataclasses.fields(PreTrainedConfig)}
    assert set(fields) - set(CONFIG_COMMON_KWARGS) == {"is_encoder_decoder", "transformers_version"}
    assert all(CONFIG_COMMON_KWARGS[k] != v for k, v in fields.items() if k in CONFIG_COMMON_KWARGS)


# --- a tiny STT ResNet ------------------------------------------------------------------------------

TINY = dict(depth=10, channels=[8, 16, 16, 16], stem_width=8, small_input=True, img_size=16,
            attn_stages=[3, 4], stt_min_channels=8, stt_hidden=8, stt_pool_size=2)


class SttModelTester:
    """Tiny configs and inputs, as transformers' ResNetModelTester makes them."""

    def __init__(self, parent, batch_size=3, image_size=16, num_channels=3, num_labels=3,
                 config_class=SttConfig, out_features=("stage2", "stage3", "stage4"), **config_overrides):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = num_channels
        self.num_labels = num_labels
        self.config_class = config_class
        self.out_features = list(out_features)
        self.config_overrides = config_overrides
        self.is_training = True

    def get_config(self) -> SttConfig:
        return self.config_class(**TINY, in_chans=self.num_channels, num_labels=self.num_labels,
                                 out_features=self.out_features, **self.config_overrides)

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class _CnnSkips:
    """The mixin tests that do not apply to a CNN over pixels, each with the reason."""

    @unittest.skip(reason="a CNN over pixels has no input embeddings (inputs_embeds)")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="a CNN over pixels has no input embeddings (inputs_embeds)")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(reason="a CNN over pixels has no input or output token embeddings to get or set")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip(reason="feed-forward chunking splits a token sequence; a CNN has none")
    def test_feed_forward_chunking(self):
        pass


def list_in_auto_mappings(test: unittest.TestCase, **names: dict[str, str]) -> None:
    """List the STT classes in transformers' Auto mappings by class name, for the duration of the test.

    The mixins choose per class by those names: base and backbone classes are left out of the training tests
    (they return no loss), classifiers get labels. transformers' own classes are listed there; the STT ones
    are registered with the Auto classes at run time instead, which the names do not show.
    """
    for mapping, entries in names.items():
        patcher = mock.patch.dict(getattr(modeling_auto, mapping), entries)
        patcher.start()
        test.addCleanup(patcher.stop)


class SttModelTest(_CnnSkips, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SttModel, SttForImageClassification, SttBackbone)
    test_resize_embeddings = False
    has_attentions = False  # STT synthesizes its attention maps; no class returns attention weights
    test_torch_exportable = False  # ExportTesterMixin is not in the source distribution (see above)
    # Initialization is complete (`_init_weights`): run the check transformers waives for models before 2023.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = SttModelTester(self)
        self.config_tester = ConfigTester(self, config_class=SttConfig, has_text_modality=False,
                                          common_properties=["num_channels"])
        list_in_auto_mappings(
            self, MODEL_MAPPING_NAMES={"stt": "SttModel"},
            MODEL_FOR_BACKBONE_MAPPING_NAMES={"stt": "SttBackbone"},
            MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES={"stt": "SttForImageClassification"})

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_hidden_states_output(self):
        """Five hidden states (stem and four stages), the first at the small-input stem's full resolution."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for through_config in (False, True):
                config.output_hidden_states = through_config
                model = model_class(config).eval()
                with torch.no_grad():
                    out = model(**inputs_dict, **({} if through_config else {"output_hidden_states": True}))
                self.assertEqual(len(out.hidden_states), 5)
                self.assertEqual(list(out.hidden_states[0].shape[-2:]), [self.model_tester.image_size] * 2)


class SttBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (SttBackbone,)
    has_attentions = False
    config_class = SttConfig

    def setUp(self):
        self.model_tester = SttModelTester(self)


# --- the captioning encoder ------------------------------------------------------------------------------

class SttVisionEncoderTest(_CnnSkips, ModelTesterMixin, unittest.TestCase):
    """The encoder VisionEncoderDecoderModel's decoders cross-attend to: a base model (no head, no loss)."""

    all_model_classes = (SttVisionEncoder,)
    test_resize_embeddings = False
    has_attentions = False
    test_torch_exportable = False
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = SttModelTester(self, config_class=SttVisionConfig, hidden_size=24)
        self.config_tester = ConfigTester(self, config_class=SttVisionConfig, has_text_modality=False,
                                          common_properties=["num_channels", "hidden_size"])
        list_in_auto_mappings(self, MODEL_MAPPING_NAMES={"stt_vision": "SttVisionEncoder"})

    def test_config(self):
        self.config_tester.run_common_tests()

    test_hidden_states_output = SttModelTest.test_hidden_states_output

    def test_tokens(self):
        """(B, H*W, hidden) tokens from the last (2 x 2) feature map, and the stem and stage maps."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        out = SttVisionEncoder(config).eval()(**inputs_dict, output_hidden_states=True)
        self.assertEqual(tuple(out.last_hidden_state.shape), (self.model_tester.batch_size, 4, 24))
        self.assertEqual(len(out.hidden_states), 5)


# --- the UperNet segmenter over an STT backbone ----------------------------------------------------------

class SttUperNetTester(SttModelTester):
    def get_config(self) -> SttUperNetConfig:
        backbone = super().get_config()
        backbone.out_features = ["stage1", "stage2", "stage3", "stage4"]
        return SttUperNetConfig(backbone_config=backbone, num_labels=self.num_labels, hidden_size=16,
                                auxiliary_channels=8, auxiliary_in_channels=None, use_auxiliary_head=True)


class SttUperNetTest(_CnnSkips, ModelTesterMixin, unittest.TestCase):
    """transformers' UperNet over an STT backbone (the route of `build_segmenter`), as tested upstream."""

    all_model_classes = (SttUperNetForSemanticSegmentation,)
    test_resize_embeddings = False
    has_attentions = False
    test_torch_exportable = False

    def setUp(self):
        self.model_tester = SttUperNetTester(self)
        segmenter = {"stt_upernet": "SttUperNetForSemanticSegmentation"}
        list_in_auto_mappings(self, MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES=segmenter)

    def test_hidden_states_output(self):
        """The backbone's five maps (stem and stages), as transformers' UperNet test checks them."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        out = SttUperNetForSemanticSegmentation(config).eval()(**inputs_dict, output_hidden_states=True)
        self.assertEqual(len(out.hidden_states), 5)
        self.assertEqual(tuple(out.logits.shape[-2:]), (self.model_tester.image_size,) * 2)
