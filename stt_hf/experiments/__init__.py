"""The comparisons behind the README's results: benchmarks, ablation, main and captioning comparisons."""
