"""The `rouge_l` evaluate metric (script: `rouge_l.py`, the name evaluate.load expects)."""
