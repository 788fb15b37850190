"""Output defenses: what a score or label oracle releases of the true probabilities.

A :class:`Defense` is ``apply(key, probs[B, K]) -> released[B, K]``; defenses compose
left to right with :func:`chain` and are parsed from strings with :func:`parse`, so every
black-box attack runs against every defense without new code.

Example:
    >>> from jaxinv import oracles
    >>> from jaxinv.models import apply_logits
    >>> d = parse("round:2,topk:3")  # == chain(round_to(2), topk(3))
    >>> oracle = oracles.score(apply_logits(module), defense=d)
    >>> probs = oracle.query(key, variables, x)  # x: 16 digits images
    >>> probs.shape, bool(((probs > 0).sum(-1) <= 3).all())
    ((16, 10), True)
"""

from __future__ import annotations

from collections.abc import Callable

from jaxinv.defenses.output import (
    Defense,
    chain,
    confidence_cutoff,
    gaussian_noise,
    identity,
    label_only,
    reverse_sigmoid,
    round_to,
    topk,
)

# name -> (factory, argument types, form shown in errors)
_SPECS: dict[str, tuple[Callable[..., Defense], tuple[type, ...], str]] = {
    "none": (identity, (), "none"),
    "topk": (topk, (int,), "topk:K"),
    "round": (round_to, (int,), "round:DECIMALS"),
    "label": (label_only, (), "label"),
    "noise": (gaussian_noise, (float,), "noise:SIGMA"),
    "rsig": (reverse_sigmoid, (float, float), "rsig:BETA,GAMMA"),
    "cutoff": (confidence_cutoff, (float,), "cutoff:TAU"),
}
_ALIASES = {"identity": "none", "round_to": "round", "label_only": "label",
            "gaussian_noise": "noise", "reverse_sigmoid": "rsig",
            "confidence_cutoff": "cutoff"}
NAMES = tuple(_SPECS)


def _help() -> str:
    forms = ", ".join(form for _, _, form in _SPECS.values())
    return (f"valid defenses: {forms}; join several with ',' "
            f"(applied left to right), e.g. 'round:2,topk:3'")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _build(name: str, args: list[str]) -> Defense:
    key = _ALIASES.get(name, name)
    if key not in _SPECS:
        raise ValueError(f"unknown defense {name!r}; {_help()}")
    factory, types, form = _SPECS[key]
    if len(args) != len(types):
        raise ValueError(f"defense {name!r} takes {len(types)} argument(s) as {form!r}, "
                         f"received {args!r}; {_help()}")
    try:
        values = [t(a) for t, a in zip(types, args, strict=True)]
    except ValueError:
        raise ValueError(f"defense {name!r}: bad argument(s) {args!r}, expected the form "
                         f"{form!r}; {_help()}") from None
    return factory(*values)


def parse(spec: str) -> Defense:
    """Parse a defense spec such as ``"round:2,topk:3"`` into a :class:`Defense`.

    Items are ``name`` or ``name:arg[,arg]`` joined by ``,`` (a bare number continues
    the previous item's arguments, as in ``"rsig:0.7,0.3"``); ``""`` and ``"none"``
    give :func:`identity`. Names: ``none``, ``topk:K``, ``round:DECIMALS``, ``label``,
    ``noise:SIGMA``, ``rsig:BETA,GAMMA``, ``cutoff:TAU``.

    Example:
        >>> parse("round:1,topk:2").apply(key, jnp.array([[0.12, 0.61, 0.27]]))
        Array([[0. , 0.6, 0.3]], dtype=float32)
        >>> released = parse("rsig:0.05,0.5,topk:2").apply(key, jnp.array([[0.1, 0.6, 0.3]]))
        >>> released.argmax(-1), int((released > 0).sum())  # "0.5" is rsig's 2nd argument
        (Array([1], dtype=int32), 2)
        >>> parse("topk")
        Traceback (most recent call last):
        ValueError: defense 'topk' takes 1 argument(s) as 'topk:K', received []; ...
    """
    if not isinstance(spec, str):
        raise ValueError(f"defense spec: expected a str, received {spec!r}; {_help()}")
    items: list[tuple[str, list[str]]] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            if spec.strip():
                raise ValueError(f"defense spec {spec!r} has an empty item; {_help()}")
            continue
        if _is_number(token) and ":" not in token:
            if not items:
                raise ValueError(f"defense spec {spec!r} starts with a number; {_help()}")
            items[-1][1].append(token)
            continue
        name, sep, arg = token.partition(":")
        name, arg = name.strip().lower(), arg.strip()
        if sep and not arg:
            raise ValueError(f"defense {name!r} has an empty argument in {spec!r}; {_help()}")
        items.append((name, [arg] if sep else []))
    defenses = [_build(name, args) for name, args in items]
    return defenses[0] if len(defenses) == 1 else chain(*defenses)


__all__ = [
    "NAMES",
    "Defense",
    "chain",
    "confidence_cutoff",
    "gaussian_noise",
    "identity",
    "label_only",
    "parse",
    "reverse_sigmoid",
    "round_to",
    "topk",
]
