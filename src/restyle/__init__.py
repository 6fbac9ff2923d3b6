"""restyle: how the style of supervised fine-tuning data changes what a model learns."""

__version__ = "0.1.0"
