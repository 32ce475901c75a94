"""CLI options are built from the config dataclasses: every user-facing field appears with its help and default."""

import argparse
import dataclasses

import pytest

from hf_ext.any_precision.config import AnyPrecisionConfig
from hf_ext.cli import build_parser
from hf_ext.common.cli_args import add_config_arguments, config_from_args
from hf_ext.compression.config import CompressionConfig
from hf_ext.privacy.attacks import AttackConfig
from hf_ext.privacy.samia import SamiaConfig
from hf_ext.speculative.config import SpeculativeConfig
from hf_ext.structured.config import StructuredPruningConfig

ALL_CONFIGS = [CompressionConfig, StructuredPruningConfig, AnyPrecisionConfig, SamiaConfig, AttackConfig,
               SpeculativeConfig]


def _subparser(name: str, *path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for part in (name, *path):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[part]
    return parser


@pytest.mark.parametrize("command, cls, module", [
    (("compress",), CompressionConfig, "hf_ext.compression.cli"),
    (("prune",), StructuredPruningConfig, "hf_ext.structured.cli"),
    (("anyprec",), AnyPrecisionConfig, "hf_ext.any_precision.cli"),
])
def test_every_user_field_is_an_option_with_the_config_default(command, cls, module):
    import importlib

    excluded = set(importlib.import_module(module).RESULT_FIELDS)
    parser = _subparser(*command)
    dests = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(cls):
        if f.name in excluded or "dict" in str(f.type):
            continue
        action = dests.get(f"{cls.__name__}.{f.name}")
        assert action is not None, f"{cls.__name__}.{f.name} has no CLI option"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert action.default == default
        assert f.metadata["help"] in action.help and "default:" in (action.help or "default:")
    text = parser.format_help()
    assert "(default:" in text


def test_config_from_args_round_trip_and_validation():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CompressionConfig, exclude=("block_sparsities",))
    cfg = config_from_args(CompressionConfig, parser.parse_args(["--sparsity", "0.6", "--bits", "4"]))
    assert cfg.sparsity == 0.6 and cfg.bits == 4 and cfg.metric == CompressionConfig().metric
    with pytest.raises(ValueError, match="sparsity"):
        config_from_args(CompressionConfig, parser.parse_args(["--sparsity", "1.5"]))


def test_two_configs_of_one_command_stay_apart():
    parser = _subparser("eval", "mia")
    args = parser.parse_args(["--data", "x.jsonl", "--batch-size", "3", "--samia-batch-size", "7", "--num-samples",
                              "4"])
    assert config_from_args(AttackConfig, args).batch_size == 3
    samia = config_from_args(SamiaConfig, args)
    assert samia.batch_size == 7 and samia.num_samples == 4


@pytest.mark.parametrize("cls", ALL_CONFIGS)
def test_every_config_round_trips_and_rejects_unknown_keys(cls):
    cfg = cls()
    again = cls.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="Unknown"):
        cls.from_dict({**cfg.to_dict(), "no_such_field": 1})


def test_version_flag(capsys):
    import hf_ext

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0 and hf_ext.__version__ in capsys.readouterr().out
