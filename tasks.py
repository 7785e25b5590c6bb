"""lkbuild's Invoke tasks (`inv --list`).

The tasks live in recipes.cli; this file only exposes them."""
from recipes.cli import ns

__all__ = ["ns"]
