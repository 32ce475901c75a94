"""Double DQN (van Hasselt et al., 2016) in CleanRL's shape: one config, a replay buffer, small pure functions.

TorchRL is not installed beside torch 2.13 here, and Stable-Baselines3's DQN has no double-Q; this file is the whole
algorithm. Delayed rewards: an env may return ``info["decision_rewards"] = {step_index: reward}`` for decisions
whose outcome became known during the step (the serving simulator does); a transition enters the replay buffer only
once its reward is known. Envs without that key get the usual immediate reward.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.utils import logging

from ..common.config import ConfigMixin
from .router import QNetwork

logger = logging.get_logger(__name__)


@dataclass
class DQNConfig(ConfigMixin):
    """Double DQN settings (defaults are our choices; the paper gives none we could verify).

    Args:
        total_steps: Environment steps (routing decisions) to train for.
        learning_rate: Adam learning rate.
        buffer_size: Replay buffer capacity, in transitions.
        batch_size: Transitions per gradient step.
        gamma: Discount between consecutive decisions.
        tau: Soft target-network update rate per gradient step (1.0: hard copy).
        target_every: Gradient steps between target updates.
        eps_start: Initial exploration rate.
        eps_end: Final exploration rate.
        exploration_fraction: Fraction of ``total_steps`` over which epsilon decays linearly.
        learning_starts: Steps before the first gradient step.
        train_every: Environment steps per gradient step.
        hidden: Width of the Q-network's two hidden layers.
        seed: Seed of the network, the buffer sampling, exploration and the env resets.
    """

    total_steps: int = field(default=20000, metadata={"help": "routing decisions to train for"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    buffer_size: int = field(default=20000, metadata={"help": "replay capacity"})
    batch_size: int = field(default=128, metadata={"help": "transitions per gradient step"})
    gamma: float = field(default=0.9, metadata={"help": "discount between decisions"})
    tau: float = field(default=0.05, metadata={"help": "soft target update rate"})
    target_every: int = field(default=1, metadata={"help": "gradient steps between target updates"})
    eps_start: float = field(default=1.0, metadata={"help": "initial epsilon"})
    eps_end: float = field(default=0.02, metadata={"help": "final epsilon"})
    exploration_fraction: float = field(default=0.4, metadata={"help": "fraction of steps to decay epsilon"})
    learning_starts: int = field(default=500, metadata={"help": "steps before learning"})
    train_every: int = field(default=2, metadata={"help": "env steps per gradient step"})
    hidden: int = field(default=64, metadata={"help": "hidden width"})
    seed: int = field(default=0, metadata={"help": "seed"})

    def __post_init__(self) -> None:
        for name in ("total_steps", "buffer_size", "batch_size", "target_every", "train_every", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}.")
        for name in ("gamma", "eps_start", "eps_end", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")


class ReplayBuffer:
    """A ring buffer of (obs, action, reward, next_obs, done) in numpy arrays."""

    def __init__(self, capacity: int, obs_dim: int, rng: np.random.Generator):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.pos, self.rng = capacity, 0, 0, rng

    def add(self, obs, action, reward, next_obs, done) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.dones[i] = (
            obs, action, reward, next_obs, float(done))
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        idx = self.rng.integers(0, self.size, size=n)
        return tuple(torch.from_numpy(a[idx]) for a in (self.obs, self.actions, self.rewards, self.next_obs,
                                                         self.dones))


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    return end if duration <= 0 else max(end, start + (end - start) * t / duration)


def double_dqn_targets(online: torch.nn.Module, target: torch.nn.Module, rewards: torch.Tensor,
                       next_obs: torch.Tensor, dones: torch.Tensor, gamma: float) -> torch.Tensor:
    """r + gamma * Q_target(s', argmax_a Q_online(s', a)) for non-terminal s' (the double-Q decoupling)."""
    with torch.no_grad():
        best = online(next_obs).argmax(dim=1, keepdim=True)
        next_q = target(next_obs).gather(1, best).squeeze(1)
        return rewards + gamma * next_q * (1.0 - dones)


def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


def train_step(online, target, optimizer, batch, gamma: float) -> float:
    obs, actions, rewards, next_obs, dones = batch
    y = double_dqn_targets(online, target, rewards, next_obs, dones, gamma)
    q = online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = F.smooth_l1_loss(q, y)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
    optimizer.step()
    return float(loss.detach())


def train_dqn(env: gym.Env, config: DQNConfig | None = None, progress: bool = True) -> tuple[QNetwork, dict]:
    """Train a :class:`QNetwork` on ``env`` (Discrete actions, Box observations); returns it and a training log."""
    cfg = config or DQNConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    obs_dim, n_actions = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    online = QNetwork(obs_dim, n_actions, cfg.hidden)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=cfg.learning_rate)
    buffer = ReplayBuffer(cfg.buffer_size, obs_dim, rng)
    pending: dict[int, tuple] = {}  # decisions whose reward is not known yet
    log = {"episodes": 0, "losses": [], "episode_returns": []}
    obs, _ = env.reset(seed=cfg.seed)
    ep_return, ep_step, grad_steps = 0.0, 0, 0
    decay = int(cfg.exploration_fraction * cfg.total_steps)
    for step in tqdm(range(cfg.total_steps), desc="Double DQN", disable=not progress):
        eps = linear_schedule(cfg.eps_start, cfg.eps_end, decay, step)
        if rng.random() < eps:
            action = int(rng.integers(n_actions))
        else:
            with torch.no_grad():
                action = int(online(torch.from_numpy(obs)).argmax())
        next_obs, reward, terminated, truncated, info = env.step(action)
        delayed = info.get("decision_rewards")
        if delayed is None:
            buffer.add(obs, action, reward, next_obs, terminated)
        else:
            pending[ep_step] = (obs, action, next_obs, terminated)
            for k, r in delayed.items():
                o, a, no, d = pending.pop(k)
                buffer.add(o, a, r, no, d)
        ep_return += reward
        ep_step += 1
        obs = next_obs
        if terminated or truncated:
            pending.clear()  # every decision of a finished episode has been credited (the simulator plays it out)
            log["episodes"] += 1
            log["episode_returns"].append(ep_return)
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            ep_return, ep_step = 0.0, 0
        if step >= cfg.learning_starts and step % cfg.train_every == 0 and buffer.size >= cfg.batch_size:
            log["losses"].append(train_step(online, target, optimizer, buffer.sample(cfg.batch_size), cfg.gamma))
            grad_steps += 1
            if grad_steps % cfg.target_every == 0:
                soft_update(target, online, cfg.tau)
    online.eval()
    return online, log
