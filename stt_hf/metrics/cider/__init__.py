"""The `cider` evaluate metric (script: `cider.py`, the name evaluate.load expects)."""
