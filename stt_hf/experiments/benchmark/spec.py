"""What the benchmark compares, its presets and the columns of every table it writes."""

from __future__ import annotations

# ----------------------------------------------------------------------------- what is compared

STT_VARIANTS = {"stt_dense": "dense", "stt_random": "random", "stt_factorized_random": "factorized_random",
                "stt_mixture": "mixture"}
STT_REFERENCE = "stt_dense"  # STT with its defaults: the block ratios (`*_vs_stt`) divide by this row
BLOCK_MODULES = (*STT_VARIANTS, "self_attn", "axial", "criss_cross", "flat_dense", "se", "eca", "cbam", "gc")
ALL_BLOCK_MODULES = (*BLOCK_MODULES, "flat_random")
QUADRATIC = ("self_attn", "flat_dense", "flat_random")  # hold (B, N, N) maps
AXIAL = ("axial", "criss_cross")  # hold (B, N, H + W) maps: attention along rows and columns

REFERENCE_MODEL = "resnet50"
# stt_resnet50 with a plain bottleneck as wide as STT's values in place of each STT block: what an extra
# block of about STT's size costs at the same places, with no attention.
CAPACITY_CONTROL = "stt_resnet50:attn_layer=res_block"
DEFAULT_MODELS = ("stt_resnet50", "stt_resnet50_random", "stt_resnet50_mixture", "resnet50", "seresnet50",
                  "ecaresnet50d", "botnet26t_256", "halonet26t", "lambda_resnet26t")

# Block cost: ResNet-50 stage 3 (C=1024, 14x14) and 4 (C=2048, 7x7) at 224 px with the registered
# models' STT reduction; the trunk conv is the stage's 1x1 expansion conv (its input channels here).
COST_CONFIGS = {"1024:14x14": 256, "2048:7x7": 512}
COST_REDUCTION = 16
# ATen ops one eval forward of an STT block may launch (stt_hf.reporting.profiling.count_aten_ops: top-level
# ops, views and empty allocations left out): on a GPU at ordinary batch sizes, launches rather than FLOPs
# set a small block's time.
MAX_BLOCK_OPS = 25

# Presets of the grid, repeat and model options (options given explicitly win). "auto" memory cap:
# 80% of the memory available at the start.
PRESETS = {
    "grid": dict(configs=None, channels=[64, 256], resolutions=[14, 28, 56, 112], batch_sizes=[1, 8],
                 modules=list(BLOCK_MODULES), repeats=5, warmup=1, row_budget_s=6.0, max_mem_gb=4.0,
                 forward_only=False, models=list(DEFAULT_MODELS), img_size=224, infer_batch=8,
                 train_batch=2, model_repeats=3),
    "targets": dict(configs=["256:28x28", "256:56x56", "128:112x112"], channels=[128, 256],
                    resolutions=[28, 56, 112],
                    batch_sizes=[8], modules=[STT_REFERENCE, *QUADRATIC, *AXIAL], repeats=10, warmup=1,
                    row_budget_s=20.0, max_mem_gb="auto", forward_only=True,
                    models=["stt_resnet50", CAPACITY_CONTROL], img_size=224, infer_batch=8, train_batch=8,
                    model_repeats=15, fused=True, compile="inductor"),
    "quick": dict(configs=None, channels=[16], resolutions=[7, 14], batch_sizes=[1],
                  modules=list(BLOCK_MODULES), repeats=1, warmup=1, row_budget_s=1.0, max_mem_gb=4.0,
                  forward_only=False, models=["stt_resnet50"], img_size=64, infer_batch=2, train_batch=2,
                  model_repeats=1),
}


# ---------------------------------- the one output schema: the columns of each CSV (and of each row list in
# results.json)

BLOCK_COLUMNS = ("device", "precision", "module", "channels", "resolution", "n", "batch", "params", "gflops",
                 "est_mem_gb", "status", "note", "repeats", "fwd_ms", "fwd_bwd_ms", "fwd_img_s",
                 "fwd_bwd_img_s", "peak_fwd_mb", "peak_fwd_bwd_mb", "rss_mb", "rss_method", "fwd_vs_stt",
                 "fwd_bwd_vs_stt", "peak_fwd_vs_stt", "rss_vs_stt")
FIT_COLUMNS = ("device", "precision", "module", "channels", "batch", "points", "n_min", "n_max", "k_fwd",
               "k_fwd_bwd", "k_flops", "k_peak_mem")
BLOCK_PARTS = ("values", "synths", "products", "output")  # STT's steps, timed one by one in the cost section
COST_COLUMNS = ("device", "precision", "config", "channels", "resolution", "trunk_in", "batch", "reduction",
                "repeats", "block_ms", "convs_ms", "conv_pair_ms", "trunk_ms", "values_ms", "synths_ms",
                "products_ms", "output_ms", "block_ops", "convs_gmacs_s", "trunk_gmacs_s", "block_vs_convs",
                "trunk_vs_convs_gmacs")
MODEL_COLUMNS = ("device", "precision", "model", "reference", "img_size", "note", "params", "gmacs",
                 "infer_batch", "train_batch", "peak_infer_mb", "peak_train_mb", "repeats", "infer_ms",
                 "infer_img_s", "train_step_ms", "train_img_s", "fused_infer_ms", "fused_infer_img_s",
                 "compiled_infer_ms", "compiled_infer_img_s",
                 "params_vs_ref", "gmacs_vs_ref", "infer_speed_vs_ref", "infer_speed_ci_low",
                 "infer_speed_ci_high", "train_speed_vs_ref", "train_speed_ci_low", "train_speed_ci_high",
                 "fused_speed_vs_ref", "compiled_speed_vs_ref",
                 *(f"{kind}_speed_vs_control{end}" for kind in ("infer", "fused", "compiled")
                   for end in ("", "_ci_low", "_ci_high")))
# Inference modes of the model level: eager, after fuse_for_inference() (--fused), under torch.compile
# (--compile). The *_vs_control columns pair each with the capacity control's time in the same round.
INFER_MODES = {"infer": "eager", "fused": "fused", "compiled": "compiled"}
TARGET_COLUMNS = ("device", "precision", "target", "measured", "unit", "required", "margin", "status",
                  "where")


def parse_config(text: str) -> tuple[int, int]:
    """'256:56x56' (or '256:56') -> (channels, size); the maps are square."""
    channels, sep, size = text.partition(":")
    h, _, w = size.partition("x")
    try:
        c, h, w = int(channels), int(h), int(w or h)
    except ValueError:
        raise ValueError(f"--configs: {text!r} is not C:HxW, e.g. 256:56x56") from None
    if not sep or min(c, h) < 1 or h != w:
        raise ValueError(f"--configs: {text!r} must be C:HxW with positive C and H = W, e.g. 256:56x56")
    return c, h


def config_name(channels: int, size: int) -> str:
    return f"{channels}:{size}x{size}"
