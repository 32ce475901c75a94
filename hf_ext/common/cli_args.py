"""Command-line options built from config dataclasses, so the CLI and the Python API share one set of fields,
defaults and help texts (the role of ``transformers.HfArgumentParser``, which reads ``metadata["help"]`` the same
way; ours also skips the fields a run writes back, such as achieved sparsities, and takes per-field choices).

    add_config_arguments(parser, CompressionConfig, exclude=RESULT_FIELDS, choices={"metric": METRICS})
    cfg = config_from_args(CompressionConfig, args)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def _unwrap(hint) -> tuple[Any, bool]:
    """(inner type, optional) of ``X`` or ``X | None``."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _dest(config_cls: type, name: str) -> str:
    return f"{config_cls.__name__}.{name}"  # keeps two configs of one command (and its own options) apart


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, exclude: Iterable[str] = (),
                         choices: Mapping[str, Iterable[Any]] | None = None,
                         defaults: Mapping[str, Any] | None = None,
                         rename: Mapping[str, str] | None = None) -> argparse._ArgumentGroup:
    """Add one option per field of ``config_cls`` (a dataclass) to ``parser`` in a group named after the class.

    Fields of dict type, and those in ``exclude``, are left out; ``list[X]`` fields take several values;
    ``bool`` fields get ``--name`` / ``--no-name``. ``defaults`` overrides a field's default for this command
    only (shown in the help); ``rename`` gives a field another option name (``{"batch_size": "samia-batch-size"}``)
    when two configs of one command share a field. Returns the argument group.
    """
    hints = typing.get_type_hints(config_cls)
    choices, defaults, exclude, rename = dict(choices or {}), dict(defaults or {}), set(exclude), dict(rename or {})
    group = parser.add_argument_group(f"{config_cls.__name__} fields")
    for f in dataclasses.fields(config_cls):
        if f.name in exclude or not f.init:
            continue
        inner, optional = _unwrap(hints[f.name])
        origin = typing.get_origin(inner)
        if inner is dict or origin is dict:
            continue
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = defaults.get(f.name, f.default_factory())
        kwargs: dict[str, Any] = {"dest": _dest(config_cls, f.name), "default": default,
                                  "help": f"{f.metadata.get('help', '')} (default: {default!r})".strip()}
        if f.name in choices:
            kwargs["choices"] = list(choices[f.name])
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["type"] = (typing.get_args(inner) or (str,))[0]
        elif inner in (int, float, str):
            kwargs["type"] = inner
        else:
            continue  # anything richer stays a Python-API field
        if inner is not bool and "choices" not in kwargs:
            kwargs["metavar"] = f.name.upper()
        group.add_argument(_option(rename.get(f.name, f.name)), **kwargs)
    return group


def config_from_args(config_cls: type, args: argparse.Namespace, **overrides):
    """Build ``config_cls`` from the options :func:`add_config_arguments` added (plus ``overrides``)."""
    prefix = _dest(config_cls, "")
    values = {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}
    return config_cls(**{**values, **overrides})
