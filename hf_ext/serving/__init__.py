"""Learned best-effort LLM serving (Jha et al., 2024): an OpenAI-compatible server whose Double-DQN router trades
quality for availability under load, a gymnasium simulator driven by a measured profile, and a load generator.

    >>> profile = hf_ext.serving.ServingProfile.load("profile.json")       # hf-ext serve profile
    >>> router, _ = hf_ext.serving.train_router(profile, SimulatorConfig(rate=(0.5, 50)))
    >>> app = hf_ext.serving.build_app(levels, profile=profile, router=router)   # FastAPI; hf-ext serve
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common.import_utils import lazy_getattr

_import_structure: dict[str, list[str]] = {
    "profile": ["ServingProfile", "LevelProfile"],
    "arrivals": ["Trace", "make_trace", "diurnal_counts"],
    "policies": ["RouterState", "ObsSpec", "encode_state", "EwmaRate", "StaticPolicy", "ThresholdPolicy",
                 "baselines", "estimate_completion"],
    "simulator": ["ServingSimulator", "SimulatorConfig"],
    "router": ["Router", "QNetwork"],
    "dqn": ["DQNConfig", "train_dqn", "double_dqn_targets"],
    "training": ["train_router", "run_policy", "sweep", "paper_ratios"],
    "levels": ["Level", "HFModelLevel", "AnyPrecisionLevel", "OpenAILevel", "BackendUnavailable", "parse_level"],
    "server": ["BestEffortServer", "ServerConfig", "build_app"],
    "loadgen": ["LoadConfig", "run_load"],
    "profiler": ["measure_profile", "default_tasks"],
}
__all__ = [
    "AnyPrecisionLevel",
    "BackendUnavailable",
    "BestEffortServer",
    "DQNConfig",
    "EwmaRate",
    "HFModelLevel",
    "Level",
    "LevelProfile",
    "LoadConfig",
    "ObsSpec",
    "OpenAILevel",
    "QNetwork",
    "Router",
    "RouterState",
    "ServerConfig",
    "ServingProfile",
    "ServingSimulator",
    "SimulatorConfig",
    "StaticPolicy",
    "ThresholdPolicy",
    "Trace",
    "baselines",
    "build_app",
    "default_tasks",
    "diurnal_counts",
    "double_dqn_targets",
    "encode_state",
    "estimate_completion",
    "make_trace",
    "measure_profile",
    "paper_ratios",
    "parse_level",
    "run_load",
    "run_policy",
    "sweep",
    "train_dqn",
    "train_router",
]
__getattr__ = lazy_getattr(__name__, globals(), _import_structure)

if TYPE_CHECKING:
    from .arrivals import Trace, diurnal_counts, make_trace
    from .dqn import DQNConfig, double_dqn_targets, train_dqn
    from .levels import AnyPrecisionLevel, BackendUnavailable, HFModelLevel, Level, OpenAILevel, parse_level
    from .loadgen import LoadConfig, run_load
    from .policies import (
        EwmaRate,
        ObsSpec,
        RouterState,
        StaticPolicy,
        ThresholdPolicy,
        baselines,
        encode_state,
        estimate_completion,
    )
    from .profile import LevelProfile, ServingProfile
    from .profiler import default_tasks, measure_profile
    from .router import QNetwork, Router
    from .server import BestEffortServer, ServerConfig, build_app
    from .simulator import ServingSimulator, SimulatorConfig
    from .training import paper_ratios, run_policy, sweep, train_router
