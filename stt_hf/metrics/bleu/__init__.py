"""The `bleu` evaluate metric (script: `bleu.py`, the name evaluate.load expects)."""
