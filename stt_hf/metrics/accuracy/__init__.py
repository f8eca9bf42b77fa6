"""The `accuracy` evaluate metric (script: `accuracy.py`, the name evaluate.load expects)."""
