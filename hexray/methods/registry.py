"""Methods registered by name, so configs and Tune sweeps pick them with a string."""

from __future__ import annotations

from collections.abc import Callable

from hexray.losses import HexConfig
from hexray.methods.base import SSLMethod, ViewSpec
from hexray.methods.settings import MethodConfig
from hexray.models import BackboneConfig, SEMConfig

METHODS: dict[str, type[SSLMethod]] = {}


def register_method(name: str) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    """Class decorator: `@register_method("simclr")` makes the class buildable by `build_method`."""

    def wrap(cls: type[SSLMethod]) -> type[SSLMethod]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {METHODS[name].__name__}")
        METHODS[name] = cls
        return cls

    return wrap


def build_method(
    method: MethodConfig, backbone: BackboneConfig, hex: HexConfig, sem: SEMConfig, max_epochs: int
) -> SSLMethod:
    """Instantiate the method named by `method.name` with its backbone, heads, HEX and SEM settings."""
    if method.name not in METHODS:
        raise ValueError(f"method.name must be one of {sorted(METHODS)}, got {method.name!r}")
    return METHODS[method.name](method, backbone, hex, sem, max_epochs)


def check_method(method: MethodConfig) -> None:
    """The name is registered and `method.options` fit that method's `Options` (ValueError naming the key)."""
    if method.name not in METHODS:
        raise ValueError(f"method.name must be one of {sorted(METHODS)}, got {method.name!r}")
    METHODS[method.name].options_of(method)


def method_view_spec(method: MethodConfig) -> ViewSpec:
    """The views `method.name` trains on, without building it (the driver sizes the data pipeline with it)."""
    if method.name not in METHODS:
        raise ValueError(f"method.name must be one of {sorted(METHODS)}, got {method.name!r}")
    return METHODS[method.name].view_spec(method)
