"""Name lookup shared by activations, initializers and losses."""

from typing import TypeVar

T = TypeVar("T")


def resolve(value, registry: dict[str, T], kind: str, cls: type) -> T:
    """Return `value` if it is a `cls`, else the registry entry it names.

    Raises:
      ValueError: an unknown name; the message lists the known ones.
      TypeError: neither a name nor a `cls`.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        if value in registry:
            return registry[value]
        raise ValueError(
            f"unknown {kind} {value!r}; expected one of: {', '.join(sorted(registry))}"
        )
    article = "an" if kind[0] in "aeiou" else "a"
    raise TypeError(
        f"expected {article} {kind} name (str) or a fnnet {cls.__name__}, "
        f"got {type(value).__name__} {value!r}; to use your own function, wrap it "
        f"as fnnet.{cls.__module__.split('.')[-1]}.{cls.__name__}(...)"
    )
