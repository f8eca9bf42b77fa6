"""`stt-hf bench-input`: decoding + the train transform per DataLoader worker at 224 px against a
model's training step, and the workers it needs.

    python scripts/benchmark_input_pipeline.py --model stt_resnet50 --out outputs/bench_input
"""
from stt_hf.experiments.input_pipeline import main

if __name__ == "__main__":
    main()
