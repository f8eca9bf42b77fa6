"""The `object_f1` evaluate metric (script: `object_f1.py`, the name evaluate.load expects)."""
