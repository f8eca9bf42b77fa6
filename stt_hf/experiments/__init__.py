"""The comparisons behind docs/results.md: benchmarks, ablation, main and captioning comparisons."""
