"""Shipped checkpoints (installed as the package ``deployzoo.weights``) and their model cards."""
