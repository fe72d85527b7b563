"""Small datasets shipped inside the package (no download at run time)."""
from .digits import digits_loaders, load_digits

__all__ = ["load_digits", "digits_loaders"]
