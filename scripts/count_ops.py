"""ATen ops per STT block and per model forward (batch 2), counted as `stt-hf bench`'s cost section does.

    python scripts/count_ops.py               # the current block, every synthesizer, and the models
    python scripts/count_ops.py --reference   # also the block as it was before its ops were batched
                                              # (tests/stt_reference.py, kept for the equivalence test)
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import timm
import torch

import stt_hf  # noqa: F401  (registers the models)
from stt_hf.layers import STT, SYNTHS
from stt_hf.reporting.profiling import count_aten_ops

ROOT = Path(__file__).resolve().parents[1]


def block_ops(cls, synth: str, train: bool) -> int:
    block = cls(256, feat_size=14, synth=synth).train(train)
    x = torch.randn(2, 256, 14, 14)
    with torch.set_grad_enabled(train):
        block(x)  # warm-up
        return len(count_aten_ops(block, x))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", action="store_true", help="also count tests/stt_reference.py's block")
    args = p.parse_args()
    blocks = {"STT": STT}
    if args.reference:
        spec = importlib.util.spec_from_file_location("stt_reference", ROOT / "tests" / "stt_reference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        blocks["STT before"] = module.STT
    print("ops per STT block forward (256:14x14, batch 2): eval / train")
    for name, cls in blocks.items():
        print(f"  {name}: " + ", ".join(f"{s} {block_ops(cls, s, False)} / {block_ops(cls, s, True)}"
                                        for s in SYNTHS))
    print("ops per model forward (eval, batch 2, 224 px)")
    for name in ("resnet50", "stt_resnet50", "stt_resnet50_random", "stt_resnet50_mixture"):
        model = timm.create_model(name).eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            model(x)
            print(f"  {name}: {len(count_aten_ops(model, x))}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
