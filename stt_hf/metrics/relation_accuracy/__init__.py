"""The `relation_accuracy` evaluate metric (script: `relation_accuracy.py`, as evaluate.load expects)."""
