"""What runs leave behind: atomic outputs, curves, model cards, attention pictures, model complexity."""
