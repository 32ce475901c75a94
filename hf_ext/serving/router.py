"""The learned router: a small MLP Q-network over :func:`~hf_ext.serving.policies.encode_state`, run on CPU per
request; the level is the argmax of its Q-values. Saved as ``router.safetensors`` + ``router_config.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..common.utils import atomic_dir
from .policies import ObsSpec, RouterState, encode_state

WEIGHTS, CONFIG = "router.safetensors", "router_config.json"


class QNetwork(nn.Module):
    """Observation -> one Q-value per level. Two hidden ReLU layers (our reading of the paper's "2-layer MLP")."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, hidden
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class Router:
    """A trained Q-network plus what it needs to read a server's state: the observation spec and the names of the
    levels and tasks it was trained on (checked against the server's at load)."""

    name = "router"

    def __init__(self, q_network: QNetwork, spec: ObsSpec, levels: list[str], tasks: list[str],
                 meta: dict | None = None):
        if q_network.obs_dim != spec.dim or q_network.n_actions != spec.n_levels:
            raise ValueError(f"Q-network shape ({q_network.obs_dim} -> {q_network.n_actions}) does not match the "
                             f"observation spec ({spec.dim} -> {spec.n_levels}).")
        if len(levels) != spec.n_levels or len(tasks) != spec.n_tasks:
            raise ValueError(f"{len(levels)} level names and {len(tasks)} task names for a spec of "
                             f"{spec.n_levels} levels and {spec.n_tasks} tasks.")
        self.q, self.spec, self.levels, self.tasks = q_network.eval(), spec, list(levels), list(tasks)
        self.meta = dict(meta or {})
        # per-request inference in numpy: for a 64-wide MLP, torch's dispatch costs more than the arithmetic
        linears = [m for m in q_network.net if isinstance(m, nn.Linear)]
        self._layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        for i, (w, b) in enumerate(self._layers):
            x = x @ w + b
            if i < len(self._layers) - 1:
                x = np.maximum(x, 0.0)
        return x

    def choose(self, state: RouterState) -> int:
        return int(np.argmax(self.q_values(encode_state(state, self.spec))))

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        config = {"obs_spec": asdict(self.spec), "hidden": self.q.hidden, "levels": self.levels,
                  "tasks": self.tasks, "meta": self.meta}
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file({k: v.contiguous() for k, v in self.q.state_dict().items()}, str(tmp / WEIGHTS))
            (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Router:
        path = Path(path)
        if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a saved router (needs {CONFIG} and {WEIGHTS}); train one "
                                    "with `hf-ext serve train-router`.")
        config = json.loads((path / CONFIG).read_text())
        spec = ObsSpec(**config["obs_spec"])
        q = QNetwork(spec.dim, spec.n_levels, hidden=int(config["hidden"]))
        q.load_state_dict(load_file(str(path / WEIGHTS)))
        return cls(q, spec, config["levels"], config["tasks"], config.get("meta"))
