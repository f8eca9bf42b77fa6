"""The `meteor` evaluate metric (script: `meteor.py`, the name evaluate.load expects)."""
