"""Quantizer plumbing shared by every method that enters through ``from_pretrained(..., quantization_config=...)``.

A method supplies a config (a dataclass deriving :class:`HfExtQuantizationConfig`) and a quantizer deriving
:class:`HfExtQuantizer` that implements three things:

* ``quantize(model, tokenizer)``: calibrate and rewrite a loaded float model (runs after weights load); may store
  what reloading needs (per-layer shapes, bit widths) in ``self.quantization_config``.
* ``build_skeleton(model)``: on a saved checkpoint, swap in the packed modules on the meta model *before* weights
  load, so the packed tensors load into them (otherwise they load as unexpected keys and the linears stay random).
* ``after_load(model)`` (optional): recompute non-persistent state after a packed checkpoint loaded.

``register_method`` registers both with transformers; it runs on ``import hf_ext``, so a saved model reloads with
plain ``from_pretrained`` after that import. ``apply_to_model`` is the in-memory path (``hf_ext.compress(...)``),
leaving the model in exactly the state ``from_pretrained`` would.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils import logging
from transformers.utils.quantization_config import QuantizationConfigMixin

from .config import check_int_fields, unknown_keys_error

if TYPE_CHECKING:  # importing these at run time loads transformers' modeling stack: `import hf_ext` must not
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.get_logger(__name__)


@dataclasses.dataclass
class HfExtQuantizationConfig(QuantizationConfigMixin):
    """Base of hf-ext's dataclass configs: ``to_dict`` / ``from_dict`` round trip, validation in ``validate``.

    Subclasses are ``@dataclass`` classes with a ``quant_method`` class variable. Fields whose metadata has
    ``serialize=False`` (e.g. a tokenizer object) stay out of ``config.json``.
    """

    # transformers' mixin declares quant_method as a dataclass field; ours is fixed per class.
    quant_method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_int_fields(self)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value; subclasses extend."""

    def check_positive_ints(self, *names: str) -> None:
        """Raise naming the first of ``names`` that is not an integer >= 1 (``2.5`` and ``True`` are refused)."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")

    def check_non_negative(self, *names: str, integer: bool = False) -> None:
        """Raise naming the first of ``names`` that is negative (or, with ``integer``, not an integer)."""
        for name in names:
            value = getattr(self, name)
            if integer and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = {"quant_method": self.quant_method}
        for f in dataclasses.fields(self):
            if f.metadata.get("serialize", True):
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def __iter__(self):
        yield from self.to_dict().items()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs):
        data = dict(config_dict)
        method = data.pop("quant_method", cls.quant_method)
        if method != cls.quant_method:
            raise ValueError(f"{cls.__name__} got quant_method {method!r}, expected {cls.quant_method!r}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise unknown_keys_error(cls, unknown, names)
        config = cls(**data)
        unused = {}
        for key, value in kwargs.items():
            if key in names:
                setattr(config, key, value)
            else:
                unused[key] = value
        if kwargs:
            config.validate()
        return (config, unused) if return_unused_kwargs else config

    def copy(self, **changes):
        return dataclasses.replace(self, **changes)


class HfExtQuantizer(HfQuantizer):
    """Base quantizer: calibration after loading, packed-module skeleton before loading a saved checkpoint."""

    requires_calibration = False  # we calibrate after a float load; a saved checkpoint is "pre-quantized"

    def __init__(self, quantization_config: HfExtQuantizationConfig, **kwargs):
        super().__init__(quantization_config, **kwargs)
        self.checkpoint_dir: str | None = None

    # ----------------------------------------------------------------------------------------- method hooks
    def quantize(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, **inputs: Any) -> None:
        """``inputs``: run-time data the in-memory path may hand over (e.g. precomputed scores), never serialized."""
        raise NotImplementedError

    def build_skeleton(self, model: PreTrainedModel) -> None:
        raise NotImplementedError

    def after_load(self, model: PreTrainedModel) -> None:
        """Recompute what a packed checkpoint does not store (non-persistent buffers)."""

    def attach(self, model: PreTrainedModel) -> None:
        """Give the model method-specific behaviour (bound methods, a model card on save)."""

    needs_tokenizer: ClassVar[bool] = True

    # ---------------------------------------------------------------------------------- transformers hooks
    def validate_environment(self, *args, **kwargs) -> None:
        pass

    def update_dtype(self, dtype):
        return dtype

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        if checkpoint_files:
            self.checkpoint_dir = str(Path(checkpoint_files[0]).parent)
        if self.pre_quantized:
            self.build_skeleton(model)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if self.pre_quantized:
            self.after_load(model)
        else:
            tokenizer = self._load_tokenizer(model) if self.needs_tokenizer else None
            self.quantize(model, tokenizer)
        model.config.quantization_config = self.quantization_config
        self.attach(model)
        return model

    def _load_tokenizer(self, model: PreTrainedModel) -> PreTrainedTokenizerBase:
        explicit = getattr(self.quantization_config, "tokenizer", None)
        candidates = [explicit] if explicit else [self.checkpoint_dir, getattr(model, "name_or_path", None)]
        errors = []
        for cand in candidates:
            if not cand:
                continue
            try:
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(cand)
            except (OSError, ValueError) as e:
                errors.append(f"{cand}: {e}")
        raise ValueError(
            f"{type(self.quantization_config).__name__} calibrates on text and needs the model's tokenizer; none "
            f"was found ({'; '.join(errors) or 'no checkpoint path known'}). Pass tokenizer=<path> in the config "
            "or use the in-memory API with a tokenizer."
        )

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def register_method(config_cls: type[HfExtQuantizationConfig], quantizer_cls: type[HfExtQuantizer] | str) -> None:
    """Register a config / quantizer pair with transformers under ``config_cls.quant_method``.

    ``quantizer_cls`` may be ``"module:Class"``: then a stand-in is registered that imports the real quantizer only
    when transformers instantiates it, so ``import hf_ext`` never loads an implementation (transformers' own
    ``_LazyModule`` idea). The real class replaces its stand-in when its module is imported. Idempotent for the same
    classes (a module re-import); a different class under a taken name raises.
    """
    name = config_cls.quant_method
    if isinstance(quantizer_cls, str):
        quantizer_cls = _lazy_quantizer(quantizer_cls)
    for mapping, cls, register in (
        (AUTO_QUANTIZATION_CONFIG_MAPPING, config_cls, register_quantization_config),
        (AUTO_QUANTIZER_MAPPING, quantizer_cls, register_quantizer),
    ):
        existing = mapping.get(name)
        if existing is None:
            register(name)(cls)
        elif _class_path(existing) != _class_path(cls):
            raise ValueError(f"Quantization method {name!r} is already registered to {_class_path(existing)}.")
        elif not hasattr(cls, "lazy_target"):
            mapping[name] = cls  # a module re-import, or the real quantizer taking its stand-in's place


def _class_path(cls: type) -> str:
    return getattr(cls, "lazy_target", None) or f"{cls.__module__}:{cls.__qualname__}"


def _lazy_quantizer(target: str) -> type[HfQuantizer]:
    """A stand-in ``HfQuantizer`` subclass whose instantiation imports ``target`` ("module:Class") and returns an
    instance of the real class."""

    def __new__(cls, *args, **kwargs):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return type(f"Lazy{target.rpartition(':')[2]}", (HfQuantizer,), {
        "__new__": __new__, "lazy_target": target, "__module__": __name__,
        "__doc__": f"Stand-in that imports {target} when transformers first needs it."})


def apply_to_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    config: HfExtQuantizationConfig,
    **inputs: Any,
) -> PreTrainedModel:
    """Run a registered method on a model already in memory; afterwards it saves and reloads like one loaded with
    ``from_pretrained(..., quantization_config=config)``. ``inputs`` go to the method's ``quantize`` (precomputed
    scores or sensitivities, so one calibration pass serves several runs)."""
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(
            f"The model already carries quantization method {model.hf_quantizer.quantization_config.quant_method!r}; "
            "apply hf-ext methods to a float model."
        )
    quantizer = AUTO_QUANTIZER_MAPPING[config.quant_method](config, pre_quantized=False)
    quantizer.checkpoint_dir = getattr(model, "name_or_path", None) or None
    model.is_quantized = True
    model.quantization_method = config.quant_method
    quantizer.quantize(model, tokenizer, **inputs)
    model.hf_quantizer = quantizer
    model.config.quantization_config = quantizer.quantization_config
    quantizer.attach(model)
    return model


def replaced_modules(model: nn.Module, cls: type[nn.Module]) -> dict[str, nn.Module]:
    """Modules of type ``cls`` in ``model`` by name (tests and reports count replacements with it)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, cls)}
