"""The `macro_f1` evaluate metric (script: `macro_f1.py`, the name evaluate.load expects)."""
