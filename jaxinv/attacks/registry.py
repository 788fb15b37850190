"""The attack registry: one entry per attack; the CLI and workflows read it.

An entry names the factory and its kind: ``"white-box"`` factories are called as
``factory(apply_logits, input_shape, **options)``, black-box ones (``"score"``,
``"label"``) as ``factory(input_shape, **options)`` and run through an oracle. The
``jaxinv attack NAME`` options are derived from the factory's keyword-only parameters
(their names, defaults and annotations), so an option is declared once. ``generator``
says whether the attack runs in a GAN prior's latent space (``jaxinv attack NAME
--generator G``): ``"never"``, ``"optional"`` (a black-box kernel built with ``decode``
and ``z_shape``; ``latent`` holds its option defaults for latent runs) or ``"required"``.

Example:
    >>> from jaxinv.attacks import REGISTRY, register
    >>> sorted(REGISTRY)[:3]
    ['gmi', 'label-only', 'mi-face']
    >>> REGISTRY["gmi"].generator, REGISTRY["zo"].generator
    ('required', 'optional')
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

KINDS = ("white-box", "score", "label")
GENERATOR = ("never", "optional", "required")


class Entry(NamedTuple):
    """A registered attack: ``factory``, ``kind``, one-line ``help``, ``skip`` (keyword
    parameters not offered on the command line), ``convert`` (``{option: str -> value}``
    for options given by name, e.g. a Process), ``generator`` (one of :data:`GENERATOR`)
    and ``latent`` (option defaults when it runs in a generator's latent space)."""

    factory: Callable[..., Any]
    kind: str
    help: str
    skip: tuple[str, ...] = ()
    convert: dict[str, Callable[[str], Any]] | None = None
    generator: str = "never"
    latent: dict[str, Any] | None = None


REGISTRY: dict[str, Entry] = {}


def register(name: str, factory: Callable[..., Any], kind: str, help: str = "", *,
             skip: tuple[str, ...] = (), convert: dict | None = None,
             generator: str = "never", latent: dict | None = None) -> Entry:
    """Register ``factory`` as attack ``name`` (``jaxinv attack name`` and ``invert``).

    Example:
        >>> from jaxinv.attacks import mi_face
        >>> register("my-mi-face", mi_face, "white-box", "MI-Face again").kind
        'white-box'
        >>> del REGISTRY["my-mi-face"]
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if generator not in GENERATOR:
        raise ValueError(f"generator must be one of {GENERATOR}, got {generator!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {factory!r}")
    REGISTRY[name] = Entry(factory, kind, help or (factory.__doc__ or name).split("\n")[0],
                           tuple(skip), convert or {}, generator, dict(latent or {}))
    return REGISTRY[name]


def get(name: str) -> Entry:
    """The entry of attack ``name``, or a ``ValueError`` listing the known ones.

    Example:
        >>> get("mi-face").kind
        'white-box'
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


class Option(NamedTuple):
    """A command-line option derived from a factory parameter."""

    name: str
    kind: str  # "int", "float", "str", "bool", "range", "convert"
    default: Any


_SKIP_TYPES = ("Callable", "optax", "Stop", "Process", "Init", "dict")


def options(entry: Entry) -> list[Option]:
    """The factory's keyword-only parameters offered on the command line.

    Example:
        >>> [o.name for o in options(get("mi-face"))][:3]
        ['lr', 'max_steps', 'beta']
    """
    out = []
    for p in inspect.signature(entry.factory).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name in entry.skip:
            continue
        if p.name in (entry.convert or {}):
            out.append(Option(p.name, "convert", p.default))
            continue
        ann = str(p.annotation)
        if any(t in ann for t in _SKIP_TYPES) or callable(p.default):
            continue
        d = p.default
        kind = ("bool" if isinstance(d, bool) else "range" if ann.startswith("tuple")
                or isinstance(d, tuple) else "int" if isinstance(d, int) or ann.startswith(
                    "int") else "float" if isinstance(d, float) or ann.startswith("float")
                else "str")
        out.append(Option(p.name, kind, d))
    return out
