"""The project's targets and their check: PASS / MISS with the margin, n/a where not measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .scaling import headline_fits
from .spec import COST_CONFIGS, INFER_MODES, MAX_BLOCK_OPS, STT_VARIANTS, parse_config


@dataclass(frozen=True)
class Target:
    """One goal: a measured value must satisfy `op threshold`.

    kind "exponent": `metric` of `module`'s headline scaling fit; "block": the `metric` column (a ratio
    to STT) of `module`'s row at `config`, at the largest batch measured; "cost": the `metric` column
    of the cost row at `config`; "model": the `metric` column (a ratio to resnet50) of model `module`.
    """

    label: str
    kind: str
    metric: str
    op: str  # ">=" or "<="
    threshold: float
    module: str = ""
    config: str = ""  # "C:HxW"
    unit: str = "x"


TARGETS = (
    *(Target(f"{m}: forward latency ~ N^k", "exponent", "k_fwd", "<=", 1.6, m, unit="")
      for m in STT_VARIANTS),
    Target("self_attn: forward latency ~ N^k", "exponent", "k_fwd", ">=", 1.8, "self_attn", unit=""),
    Target("self_attn / STT forward latency, 256:56x56", "block", "fwd_vs_stt", ">=", 5.0, "self_attn",
           "256:56x56"),
    Target("self_attn / STT peak memory, 256:56x56", "block", "peak_fwd_vs_stt", ">=", 5.0, "self_attn",
           "256:56x56"),
    Target("self_attn / STT forward latency, 128:112x112", "block", "fwd_vs_stt", ">=", 20.0, "self_attn",
           "128:112x112"),
    *(Target(f"STT block / its two 1x1 convs + BN, {c}", "cost", "block_vs_convs", "<=", 1.2, config=c)
      for c in COST_CONFIGS),
    *(Target(f"STT block ATen ops per eval forward, {c}", "cost", "block_ops", "<=", MAX_BLOCK_OPS,
             config=c, unit="") for c in COST_CONFIGS),
    *(Target(f"trunk 1x1 conv GMAC/s / STT convs' GMAC/s, {c}", "cost", "trunk_vs_convs_gmacs", "<=", 1.3,
             config=c) for c in COST_CONFIGS),
    Target("stt_resnet50 / resnet50 params", "model", "params_vs_ref", "<=", 1.15, "stt_resnet50"),
    Target("stt_resnet50 / resnet50 GMACs", "model", "gmacs_vs_ref", "<=", 1.10, "stt_resnet50"),
    # STT no slower than the capacity control (a plain block of its size at its places) in each mode:
    # resnet50 itself bounds what any added block can reach (the FLOP bound is 0.944x).
    *(Target(f"stt_resnet50 / capacity control inference speed, {mode}", "model",
             f"{kind}_speed_vs_control", ">=", 1.0, "stt_resnet50")
      for kind, mode in INFER_MODES.items()),
    Target("stt_resnet50 / resnet50 training step speed", "model", "train_speed_vs_ref", ">=", 0.90,
           "stt_resnet50"),
)
TARGET_REFERENCE = "resnet50"  # the model targets are ratios to this model


def target_value(target: Target, section: dict) -> tuple[float | None, str]:
    """(measured value, where it was measured) of one target in one device's results."""
    if target.kind == "exponent":
        fit = headline_fits(section["fits"]).get((section["device"], target.module))
        if fit is None:
            return None, ""
        return fit[target.metric], f"C={fit['channels']}, B={fit['batch']}, N={fit['n_min']}..{fit['n_max']}"
    if target.kind == "block":
        channels, size = parse_config(target.config)
        rows = [r for r in section["blocks"] if (r["module"], r["channels"], r["resolution"])
                == (target.module, channels, size) and r[target.metric] is not None]
        row = max(rows, key=lambda r: r["batch"], default=None)
        return (row[target.metric], f"B={row['batch']}") if row else (None, "")
    if target.kind == "cost":
        row = next((r for r in section["cost"] if r["config"] == target.config), None)
        return (row[target.metric], f"B={row['batch']}") if row else (None, "")
    row = next((r for r in section["models"] if r["model"] == target.module
                and r["reference"] == TARGET_REFERENCE), None)
    if row is None:
        return None, ""
    # infer_speed_vs_ref -> infer_speed_ci_low; infer_speed_vs_control -> infer_speed_vs_control_ci_low
    ref = target.metric.endswith("_vs_ref")
    ci = target.metric.replace("_vs_ref", "_ci_{}") if ref else target.metric + "_ci_{}"
    low, high = (row.get(ci.format(end)) for end in ("low", "high"))
    interval = f", 95% CI {low:.3f}-{high:.3f}" if low is not None and high is not None else ""
    return row[target.metric], f"{row['img_size']} px{interval}"


def check_targets(section: dict, targets: Sequence[Target] = TARGETS) -> list[dict]:
    """One row per target: measured, required, margin (positive: met with room) and PASS / MISS / n/a."""
    results = []
    for t in targets:
        value, where = target_value(t, section)
        margin = None if value is None else (value - t.threshold if t.op == ">=" else t.threshold - value)
        status = "n/a (not measured)" if margin is None else "PASS" if margin >= 0 else "MISS"
        results.append(dict(device=section["device"], precision=section["precision"], target=t.label,
                            measured=value, unit=t.unit, required=f"{t.op} {t.threshold:g}{t.unit}",
                            margin=margin, status=status, where=where))
    return results
