"""Benchmark STT against attention baselines: blocks, scaling with N = H*W, block cost, models, targets.

`stt-hf bench` (or `python scripts/benchmark.py`) measures, in one run on one machine:

1. Blocks. Each attention module applied to a (B, C, H, W) feature map, over a grid of channels C,
   resolutions H = W and batch sizes B (or the explicit C:HxW points of --configs): parameters,
   forward FLOPs, the median latency of a forward and of a forward+backward, throughput, peak tensor
   memory and the process's peak RSS, each also as a ratio to STT (`stt_dense`, STT's defaults) at
   the same point. The modules: the STT variants (`stt_dense`, `stt_random`, `stt_factorized_random`,
   `stt_mixture`), dot-product self-attention (`self_attn`), axial and criss-cross attention (`axial`,
   `criss_cross`), the flattened Synthesizer (`flat_dense`; `flat_random` on request) and timm's SE,
   ECA, CBAM and GC, all built by `stt_hf.create_attn` with
   its defaults (or the shared --reduction), so all sit at the same placement.
2. Scaling. Forward latency against N = H*W on log-log axes, with a fitted exponent k per module
   (latency ~ N^k, np.polyfit of log latency on log N) for every (C, B) series of the grid. The
   exponent targets are checked on each module's series with the most work per call (largest C x B
   with at least three sizes). At small N fixed per-op overheads flatten every curve, so the
   exponents depend on the resolutions measured.
3. Block cost. An STT block (reduction 16, as in stt_resnet50) against its own two 1x1 convs + BN
   (run as the block runs them, `stt_hf.layers.helpers.conv1x1`) and against the trunk's 1x1
   expansion conv at the same place (ResNet-50 stages 3 and 4 at 224 px: 1024:14x14 and 2048:7x7):
   block / (convs + BN) latency, the GMAC/s of the two convs alone and of the trunk conv, and the
   ATen ops one block forward launches (`stt_hf.reporting.profiling.count_aten_ops`; budget 25).
4. Models. stt_resnet50 and its random / mixture variants against timm's resnet50, seresnet50,
   ecaresnet50d, botnet26t_256, halonet26t and lambda_resnet26t (random init, nothing downloaded):
   inference and one SGD training step, as ratios to resnet50 measured in the same run; with
   --fused also inference after the model's fuse_for_inference(), with --compile under torch.compile.
   Each inference mode of a model is also paired with the capacity control's in the same rounds. A
   model is a timm name, optionally with keyword arguments for timm.create_model:
   `stt_resnet50:attn_layer=res_block` is the capacity control
   (a plain bottleneck as wide as STT's values, at the same places). Models that cannot run at --img_size
   (botnet26t_256 has a fixed 256 px input, halonet26t needs a multiple of its 8 px halo blocks at
   every stage) run at their own default input size, which the table says.
5. Targets. Every project target that the run measured, in one table, PASS / MISS with the margin
   (n/a where the run did not measure it): the exponents, STT against self-attention at 256:56x56 and
   128:112x112, the block-cost ratios and ops, stt_resnet50 against resnet50 (params, GMACs, training
   step) and against the capacity control (inference no slower, eager / fused / compiled).

Presets (--preset; options given explicitly still win): `grid` (the default: C {64, 256} x H=W
{14, 28, 56, 112} x B {1, 8}, every module, forward and forward+backward, models at 224 px),
`targets` (the points the block targets name, 256:28x28, 256:56x56 and 128:112x112 at batch 8,
STT against the N x N baselines and axial / criss-cross attention, forward only, memory cap 80% of
what is available; stt_resnet50 and the capacity control in eager, fused and inductor-compiled
inference) and `quick` (--quick: a tiny grid and one model pair at 64 px, a smoke test).
With CUDA available the tables are measured again on the GPU in bf16 under autocast and reported
separately.

How each number is measured:

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` on the meta device (no memory, no compute); it
  counts matrix products and convolutions, not softmax, normalization or element-wise ops.
- Isolation: every block row (one module at one grid point) runs in its own fresh worker process
  (`python -m stt_hf.experiments.benchmark --worker SPEC`), so no row inherits another's allocator
  state. The modules of one grid point are timed in alternation, one call each per round, so load
  changes on a shared machine hit them alike; the models and the cost rows alternate the same way.
- Latency: the median of --repeats calls, after --warmup untimed ones. A forward runs in eval mode
  under `torch.inference_mode()`; a forward+backward runs in train mode with an input that requires
  grad (as inside a network). A slow row gets fewer repeats (at least 2) so that it stays within
  about --row_budget_s.
- Peak memory: the peak of bytes held by live tensors during the first warm-up call. On CPU it is
  read from `torch.profiler` (profile_memory=True) by summing its allocation and free events in time
  order; on CUDA it is the growth of `torch.cuda.max_memory_allocated()`. It is deterministic.
- RSS: the worker's peak resident-set growth over all its calls, from the moment the block is built
  and its input allocated: the kernel's VmHWM after resetting it through /proc/self/clear_refs
  (Linux >= 4.0), else `resource.getrusage().ru_maxrss` growth (a lower bound). It includes the C
  allocator's slack and code paged in on the first call, so it is larger than the tensor peak and
  varies by some 15% from run to run for small rows.
- Training step: forward, cross-entropy, backward and a plain SGD step (no optimizer state).
- Model ratios: every round times each model once, back to back; a model's speed ratio is the median
  over rounds of the reference's time / the model's time in the same round (pairing cancels the slow
  load drift of a shared machine), with a 95% bootstrap interval of that median.
- Skips: a row whose estimated memory exceeds --max_mem_gb is not run and is marked `skipped`
  (the N x N maps of the flattened baselines reach tens of GB at 112 x 112); a row that fails (its
  worker raises or is killed, for example for memory) is marked `failed` with the reason.

Outputs in --out: blocks.csv, exponents.csv, cost.csv, models.csv, targets.csv, results.json (all
of them with the run's settings), results.md and the plots.

The modules, one job each: `spec` (what is compared, presets, table columns), `measurement` (timing,
tensor peak, RSS, memory estimate), `worker` (one block row's process), `blocks` (the grid), `scaling`
(exponent fits), `cost` (block cost), `models` (model ratios), `targets` (PASS / MISS), `report` (CSV,
JSON, Markdown), `plots`, `cli` (options, presets, the run).
"""

from __future__ import annotations

from .cli import add_bench_parser, main, resolve_args, run, run_command
from .measurement import MIN_REPEATS, estimate_peak_gb
from .models import create_model, paired_ratio, parse_model_spec, run_models
from .report import render_models, render_targets
from .scaling import fit_exponent
from .spec import (
    BLOCK_COLUMNS,
    CAPACITY_CONTROL,
    COST_COLUMNS,
    COST_CONFIGS,
    COST_REDUCTION,
    FIT_COLUMNS,
    MAX_BLOCK_OPS,
    MODEL_COLUMNS,
    REFERENCE_MODEL,
    TARGET_COLUMNS,
)
from .targets import TARGETS, check_targets
from .worker import BlockWorker

__all__ = [
    "BLOCK_COLUMNS", "CAPACITY_CONTROL", "COST_COLUMNS", "COST_CONFIGS", "COST_REDUCTION", "FIT_COLUMNS",
    "MAX_BLOCK_OPS", "MIN_REPEATS", "MODEL_COLUMNS", "REFERENCE_MODEL", "TARGETS", "TARGET_COLUMNS",
    "BlockWorker",
    "add_bench_parser", "check_targets", "create_model", "estimate_peak_gb", "fit_exponent", "main",
    "paired_ratio", "parse_model_spec", "render_models", "render_targets", "resolve_args", "run",
    "run_command", "run_models",
]
