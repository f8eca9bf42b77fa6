"""The `mean_iou` evaluate metric (script: `mean_iou.py`, the name evaluate.load expects)."""
