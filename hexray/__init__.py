"""hexray: self-supervised image pretraining with the HEX regularizer, from a laptop to a Ray cluster."""

__version__ = "0.1.0"
