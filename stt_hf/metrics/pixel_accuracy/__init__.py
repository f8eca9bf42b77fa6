"""The `pixel_accuracy` evaluate metric (script: `pixel_accuracy.py`, the name evaluate.load expects)."""
