"""Block cost: an STT block against its own two 1x1 convs + BN and against the trunk's 1x1 conv."""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from ...layers.helpers import conv1x1
from ...layers.stt import STT
from ...reporting.profiling import count_aten_ops
from .measurement import autocast, timed
from .spec import BLOCK_PARTS, COST_CONFIGS, COST_REDUCTION, MAX_BLOCK_OPS, parse_config


def run_cost(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Per cost config: the STT block, its two 1x1 convs + BN, the two convs alone and the trunk's 1x1
    conv, alternating; and the block's parts one by one on fixed inputs (values: the first projection;
    synths: the attention maps; products: the mode products; output: projection, BN and residual), to
    show where its time goes.

    Eval mode, batch --infer_batch; 3 x --repeats rounds, as these calls are short.
    """
    rows, batch = [], args.infer_batch
    for config, trunk_in in COST_CONFIGS.items():
        channels, size = parse_config(config)
        stt = STT(channels, feat_size=(size, size), reduction=COST_REDUCTION, device=device).eval()
        trunk = nn.Conv2d(trunk_in, channels, 1, bias=False, device=device).eval()
        x = torch.randn(batch, channels, size, size, device=device)
        x_trunk = torch.randn(batch, trunk_in, size, size, device=device)
        with torch.inference_mode(), autocast(device, precision):
            v = stt.values(x)
            maps = stt.attention_maps(v)
            y = stt.transform(v, maps).reshape(batch, -1, size, size)
        calls = {"block": lambda stt=stt, x=x: stt(x),
                 "convs": lambda stt=stt, x=x: stt.norm(conv1x1(conv1x1(x, stt.to_v.weight),
                                                                 stt.proj.weight)),
                 "conv_pair": lambda stt=stt, x=x: conv1x1(conv1x1(x, stt.to_v.weight), stt.proj.weight),
                 "trunk": lambda trunk=trunk, x=x_trunk: trunk(x),
                 "values": lambda stt=stt, x=x: stt.values(x),
                 "synths": lambda stt=stt, v=v: stt.attention_maps(v),
                 "products": lambda stt=stt, v=v, maps=maps: stt.transform(v, maps),
                 "output": lambda stt=stt, x=x, y=y: stt.output(x, y)}
        times = {k: [] for k in calls}
        with torch.inference_mode(), autocast(device, precision):
            for call in calls.values():
                for _ in range(args.warmup):
                    call()
            for _ in range(3 * args.repeats):
                for k, call in calls.items():
                    times[k].append(timed(call, device))
            ops = len(count_aten_ops(calls["block"]))
        med = {k: statistics.median(v) for k, v in times.items()}
        cv = stt.to_v.out_channels
        # GMAC/s of the convolutions themselves (BN has no MACs; its time is in block / convs + BN).
        convs_gmacs_s = 2 * channels * cv * size * size * batch / med["conv_pair"] / 1e9
        trunk_gmacs_s = trunk_in * channels * size * size * batch / med["trunk"] / 1e9
        rows.append(dict(device=device.type, precision=precision, config=config, channels=channels,
                         resolution=size, trunk_in=trunk_in, batch=batch, reduction=COST_REDUCTION,
                         repeats=len(times["block"]), block_ms=med["block"] * 1e3,
                         convs_ms=med["convs"] * 1e3, conv_pair_ms=med["conv_pair"] * 1e3,
                         trunk_ms=med["trunk"] * 1e3,
                         **{f"{part}_ms": med[part] * 1e3 for part in BLOCK_PARTS},
                         block_ops=ops,
                         convs_gmacs_s=convs_gmacs_s, trunk_gmacs_s=trunk_gmacs_s,
                         block_vs_convs=med["block"] / med["convs"],
                         trunk_vs_convs_gmacs=trunk_gmacs_s / convs_gmacs_s))
        print(f"cost: {device.type} {config}: block {med['block'] * 1e3:.2f} ms, convs+BN "
              f"{med['convs'] * 1e3:.2f} ms (convs alone {med['conv_pair'] * 1e3:.2f}), trunk conv "
              f"{med['trunk'] * 1e3:.2f} ms, {ops} ATen ops per block (budget {MAX_BLOCK_OPS}); parts "
              + ", ".join(f"{part} {med[part] * 1e3:.2f}" for part in BLOCK_PARTS) + " ms", flush=True)
    return rows
