"""torch.compile as a first-class path: whole graphs, training and eval, no host synchronisation.

The default run compiles with the `aot_eager` backend: Dynamo's capture with fullgraph=True (a graph
break is an error) and AOTAutograd's forward and backward graphs, without code generation. One model and
every attention layer run by default; every registered model, and every attention layer placed in a
model, run with --runslow.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from functorch.compile import make_boxed_func
from timm.models import model_entrypoint
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounterWithBackend
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from stt_hf.layers import ATTN_FACTORIES, create_attn
from stt_hf.models.plugin import PLUGGED_MODELS, attention_modules

MODEL_NAMES = timm.list_models("stt_*")
DEFAULT_MODEL = "stt_resnet10_s"
# Ops that make the host wait for the device (a value or a data-dependent shape read back).
SYNC_OPS = ("_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "unique", "masked_select",
            "_assert_async")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: Dynamo caches per code object, so the STT forward compiled for
    many models in one process would hit its recompile limit (8), which fullgraph=True turns into an error."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def input_px(name: str) -> int:
    return 32 if timm.models.get_pretrained_cfg(name).input_size[-1] <= 32 else 64


class GraphRecorder:
    """A backend that keeps AOTAutograd's ATen graphs (forward and backward) and runs them eagerly."""

    def __init__(self):
        self.graphs: list[torch.fx.GraphModule] = []
        self.backend = aot_autograd(fw_compiler=self.record, bw_compiler=self.record)

    def record(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return make_boxed_func(gm.forward)

    def sync_ops(self) -> list[str]:
        """Nodes that read a value back to the host: a scalar read, or a result whose shape depends on
        the data (an unbacked symbol, which the host must learn before it can go on)."""
        found = []
        for gm in self.graphs:
            for node in gm.graph.nodes:
                name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
                if node.op == "call_function" and (
                        name in SYNC_OPS or free_unbacked_symbols(node.meta.get("val"))):
                    found.append(f"{name}: {node.format_node()}")
        return found


def nonzero_branches(model: torch.nn.Module) -> torch.nn.Module:
    """Every zero-initialised output BN (STT, the baselines, the capacity control's bn3) made nonzero,
    and every BN given running statistics: the attention paths contribute, in train and eval alike."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return model


def check_compiles(model: torch.nn.Module, make_input, tol: float = 1e-4) -> GraphRecorder:
    """Eval forward and a training step (forward, backward, SGD step) compiled with fullgraph=True give
    the eager results, each step from the same parameters; after mark_dynamic on the batch, another batch
    size compiles nothing new."""
    recorder = GraphRecorder()
    for train in (False, True):
        eager = copy.deepcopy(model).train(train)
        counter = CompileCounterWithBackend(recorder.backend)
        compiled_model = copy.deepcopy(model).train(train)
        compiled = torch.compile(compiled_model, backend=counter, fullgraph=True)
        for batch in (2, 3):
            x = make_input(batch)
            torch._dynamo.mark_dynamic(x, 0)
            if not train:
                with torch.no_grad():
                    out, ref = compiled(x), eager(x)
                scale = max(1.0, ref.abs().max().item())
                torch.testing.assert_close(out, ref, rtol=tol, atol=tol * scale)
                continue
            results = []
            for module, fn in ((eager, eager), (compiled_model, compiled)):
                opt = torch.optim.SGD(module.parameters(), lr=0.1)
                out = fn(x)
                (out.float() ** 2).mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                results.append((out.detach(), [p.detach().clone() for p in module.parameters()]))
            (ref, ref_params), (out, params) = results
            scale = max(1.0, ref.abs().max().item())
            torch.testing.assert_close(out, ref, rtol=tol, atol=tol * scale)
            for p, r in zip(params, ref_params, strict=True):
                torch.testing.assert_close(p, r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()))
            # The next step starts from the same state in both. Eager and compiled round differently, and
            # a net in train mode amplifies that from step to step: stt_efficientnet_lite0 at 64 px (batch
            # statistics over 2x2 pixels) turns a 7e-7 weight difference into 3e-4 at the next output, and
            # 1e-15 into 6e-13 in float64, the plain trunk alike: the conditioning, not the compiled graph.
            compiled_model.load_state_dict(eager.state_dict())
        assert counter.frame_count == 1, f"{'train' if train else 'eval'}: recompiled for a new batch size"
    assert not recorder.sync_ops(), recorder.sync_ops()
    return recorder


def check_model(name: str, **kwargs) -> GraphRecorder:
    """The model as timm initializes it, with its attention blocks' branches switched on (random trunk
    BatchNorms would make a deep net's outputs explode, and float rounding with them)."""
    model = timm.create_model(name, **kwargs)
    for _, block in attention_modules(model):  # the stt_resnet and the plugged families
        nonzero_branches(block)
    px = input_px(name)
    return check_compiles(model, lambda b: torch.randn(b, 3, px, px))


def test_default_model_compiles_train_and_eval_without_host_sync():
    """The mixture (dense and random paths) in a model: whole graphs, no recompiles, and ATen graphs
    (forward and backward) that read nothing back to the host, even with Dynamo allowed to capture
    scalar reads and data-dependent shapes into the graph rather than refusing them."""
    with torch._dynamo.config.patch(capture_scalar_outputs=True, capture_dynamic_output_shape_ops=True):
        recorder = check_model(DEFAULT_MODEL, stt_synth="mixture")
        probe = GraphRecorder()  # the recorder does see a sync op where there is one
        torch.compile(lambda t: t[t > 0] * 2, backend=probe.backend, fullgraph=True)(torch.randn(8))
    assert len(recorder.graphs) == 3  # eval forward, train forward, train backward
    assert any("bmm" in str(n.target) for gm in recorder.graphs for n in gm.graph.nodes)
    assert probe.sync_ops()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registered_model_compiles_train_and_eval(name):
    check_model(name)


@pytest.mark.parametrize("attn", sorted(ATTN_FACTORIES))
def test_attention_layer_compiles_train_and_eval(attn):
    """Each attention layer alone (channels 32 at 6 x 5: every STT mode its own size)."""
    block = nonzero_branches(create_attn(attn, 32, (6, 5), heads=2))
    check_compiles(block, lambda b: torch.randn(b, 32, 6, 5), tol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("attn", sorted(ATTN_FACTORIES))
def test_attention_layer_in_a_model_compiles(attn):
    check_model(DEFAULT_MODEL, attn_layer=attn)


def parametrized(test) -> set:
    """The values a test function is parametrized with."""
    (mark,) = (m for m in test.pytestmark if m.name == "parametrize")
    return set(mark.args[1])


def test_sweeps_cover_every_registered_model_and_attention_layer():
    """Every timm model this package registers, whatever its name (the STT ResNets and the plugged
    families), is in the model sweep, and every name the attention factory knows is in both layer sweeps:
    a model or layer added later cannot be left out."""
    ours = {n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("stt_hf.")}
    assert set(PLUGGED_MODELS) < ours and DEFAULT_MODEL in ours
    assert parametrized(test_registered_model_compiles_train_and_eval) == ours
    for test in (test_attention_layer_compiles_train_and_eval, test_attention_layer_in_a_model_compiles):
        assert parametrized(test) == set(ATTN_FACTORIES)



def test_transformers_model_compiles_with_its_loss():
    """What `stt-hf train --torch_compile true` compiles: the transformers classifier, labels and loss
    included, as one graph."""
    from stt_hf import SttConfig
    from stt_hf.hf.modeling_stt import SttForImageClassification

    model = SttForImageClassification(SttConfig.from_timm_name(DEFAULT_MODEL, num_labels=3)).train()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    out = compiled(pixel_values=pixels, labels=labels)
    out.loss.backward()
    assert counter.frame_count == 1 and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_train_command_with_torch_compile(tmp_path):
    """`stt-hf train --torch_compile true` (the Trainer's flag): a tiny real run that saves a model whose
    keys are the uncompiled model's."""
    from safetensors.torch import load_file

    from stt_hf.tasks import train

    out = tmp_path / "run"
    train.main(["--dataset", "mnist_5k", "--max_train_samples", "64", "--max_eval_samples", "32",
                "--per_device_train_batch_size", "16", "--max_steps", "3", "--disable_tqdm", "true",
                "--torch_compile", "true", "--torch_compile_backend", "aot_eager", "--output_dir", str(out)])
    keys = set(load_file(out / "model.safetensors"))
    assert keys and not any("_orig_mod" in k for k in keys)
