"""One jitted function per object, for objects that cannot be hashed.

Flax modules that hold the body model (arrays) and the body model itself cannot be keys of a
functools cache; the functions jitted for them (inference, posing the body) are cached here by
the object's id and kept beside the object, so validations and predictions after the first reuse
the compiled programs.
"""

from __future__ import annotations

from collections.abc import Callable

_CACHE: dict[tuple[str, int], tuple[object, Callable]] = {}
MAX_ENTRIES = 8  # a few models and body models per process (runs in tests, the demo)


def per_object(kind: str, owner: object, make: Callable[[], Callable]) -> Callable:
    """The function `make()` built for (`kind`, `owner`), built once while `owner` lives here.

    Args:
      kind: what the function does (one owner can have several).
      owner: the object the function is built for; kept alive with its function.
      make: builds the function (typically a `jax.jit` closure over `owner`).
    """
    slot = (kind, id(owner))
    cached = _CACHE.get(slot)
    if cached is not None and cached[0] is owner:
        return cached[1]
    if len(_CACHE) >= MAX_ENTRIES:
        _CACHE.pop(next(iter(_CACHE)))  # the oldest
    function = make()
    _CACHE[slot] = (owner, function)
    return function
