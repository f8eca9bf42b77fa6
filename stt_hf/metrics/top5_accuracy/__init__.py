"""The `top5_accuracy` evaluate metric (script: `top5_accuracy.py`, the name evaluate.load expects)."""
