"""Serving simulator, arrivals, baselines and the Double DQN router (no model, no server)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hf_ext.serving.arrivals import diurnal_counts, make_trace
from hf_ext.serving.dqn import DQNConfig, double_dqn_targets, train_dqn
from hf_ext.serving.policies import EwmaRate, RouterState, StaticPolicy, baselines, estimate_completion
from hf_ext.serving.profile import LevelProfile, ServingProfile
from hf_ext.serving.router import QNetwork, Router
from hf_ext.serving.simulator import ServingSimulator, SimulatorConfig
from hf_ext.serving.training import paper_ratios, run_policy, sweep, train_router


def toy_profile() -> ServingProfile:
    return ServingProfile(levels=[
        LevelProfile("small", [1, 4, 8], [0.05, 0.08, 0.12], 0.05, {"a": 0.55, "b": 0.5}),
        LevelProfile("mid", [1, 4, 8], [0.2, 0.3, 0.45], 0.05, {"a": 0.8, "b": 0.7}),
        LevelProfile("large", [1, 4, 8], [0.6, 0.9, 1.3], 0.05, {"a": 0.95, "b": 0.9}),
    ], tasks=["a", "b"])


def test_profile_round_trip_and_interpolation(tmp_path):
    p = toy_profile()
    p.save(tmp_path / "p.json")
    q = ServingProfile.load(tmp_path / "p.json")
    assert q.to_dict() == p.to_dict()
    lv = q.levels[0]
    assert lv.service_time(2) == pytest.approx(0.05 + (0.08 - 0.05) / 3)
    assert lv.service_time(16) == pytest.approx(0.12 + 8 * 0.01)
    assert q.best_level() == 2 and q.fastest_level() == 0
    with pytest.raises(ValueError, match="Unknown profile keys"):
        ServingProfile.from_dict({**p.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="no quality for tasks"):
        ServingProfile(levels=[LevelProfile("x", [1], [1.0], quality={"a": 1.0})], tasks=["a", "b"])


def test_config_validation():
    with pytest.raises(ValueError, match="pattern"):
        SimulatorConfig(pattern="weibull")
    with pytest.raises(ValueError, match="rate"):
        SimulatorConfig(rate=(5, 1))
    with pytest.raises(ValueError, match=r"Unknown SimulatorConfig field\(s\)"):
        SimulatorConfig.from_dict({"rat": 1})
    with pytest.raises(ValueError, match="gamma"):
        DQNConfig(gamma=1.5)
    from hf_ext.serving.loadgen import LoadConfig
    from hf_ext.serving.server import ServerConfig

    for cls in (SimulatorConfig, DQNConfig, LoadConfig, ServerConfig):
        assert cls.from_dict(cls().to_dict()) == cls()
        with pytest.raises(ValueError, match=f"Unknown {cls.__name__} field"):
            cls.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="queue_bound"):
        ServerConfig(queue_bound=0)
    with pytest.raises(ValueError, match="url"):
        LoadConfig(url="127.0.0.1:8000")


@pytest.mark.parametrize("pattern", ["poisson", "gamma", "diurnal"])
def test_traces_are_bounded_deterministic_and_at_the_rate(pattern):
    kw = dict(max_requests=5000, task_mix=[0.3, 0.7], deadlines=[1.0, 2.0], burstiness=0.5)
    a = make_trace(pattern, 20.0, 120.0, np.random.default_rng(3), **kw)
    b = make_trace(pattern, 20.0, 120.0, np.random.default_rng(3), **kw)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.tasks, b.tasks)
    assert len(a) <= 5000 and a.times.max() < 120.0 and np.all(np.diff(a.times) >= 0)
    assert a.mean_rate == pytest.approx(20.0, rel=0.25)
    assert abs(np.mean(a.tasks == 1) - 0.7) < 0.05
    assert len(make_trace(pattern, 1000.0, 120.0, np.random.default_rng(0), **{**kw, "max_requests": 50})) == 50


def test_burstiness_raises_gap_variation():
    kw = dict(max_requests=10000, task_mix=[1.0], deadlines=[1.0])
    cv = lambda t: np.std(np.diff(t.times)) / np.mean(np.diff(t.times))  # noqa: E731
    assert cv(make_trace("gamma", 10, 500, np.random.default_rng(0), burstiness=0.25, **kw)) > 1.5
    assert cv(make_trace("poisson", 10, 500, np.random.default_rng(0), **kw)) == pytest.approx(1.0, abs=0.1)
    counts = diurnal_counts(5.0, 240, np.random.default_rng(0))
    assert counts.mean() == pytest.approx(300.0) and counts.max() / counts.min() > 3


def test_check_env_passes_with_warnings_as_errors():
    env = ServingSimulator(toy_profile(), SimulatorConfig(rate=(1, 30), duration_s=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)


def test_simulator_is_deterministic_from_a_seed():
    cfg = SimulatorConfig(rate=(1, 30), duration_s=10, pattern="gamma", burstiness=0.5)

    def episode(seed):
        env = ServingSimulator(toy_profile(), cfg)
        obs, _ = env.reset(seed=seed)
        trail, rng = [obs], np.random.default_rng(0)
        while True:
            obs, r, term, trunc, info = env.step(int(rng.integers(3)))
            trail += [obs, np.array([r])]
            if term:
                return np.concatenate(trail), info["summary"]

    (a, sa), (b, sb), (c, _) = episode(7), episode(7), episode(8)
    assert np.array_equal(a, b) and sa == sb
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_every_request_is_accounted_for_and_rewards_credit_their_decision():
    p = toy_profile()
    env = ServingSimulator(p, SimulatorConfig(rate=50, duration_s=10, queue_bound=8, noise=False))
    env.reset(seed=0)
    credited, total = {}, 0.0
    while True:
        _, r, term, _, info = env.step(2)  # static best at 50/s: overloaded
        credited.update(info["decision_rewards"])
        total += r
        if term:
            break
    s = info["summary"]
    assert sorted(credited) == list(range(s["requests"]))
    assert s["served"] + s["refused"] + s["dropped"] == s["requests"] and s["refused"] > 0
    assert total == pytest.approx(sum(credited.values()))
    assert s["availability"] < 0.5


def test_light_load_meets_every_deadline_and_static_fastest_survives_overload():
    p, cfg = toy_profile(), SimulatorConfig(duration_s=20, noise=False)
    pols = baselines(p, cfg.max_batch)
    light = run_policy(p, cfg, pols["static_best"], seed=0, rate=0.5)
    assert light["availability"] == 1.0 and light["normalized_quality"] == pytest.approx(1.0)
    heavy = run_policy(p, cfg, pols["static_fastest"], seed=0, rate=40)
    assert heavy["availability"] == 1.0 and heavy["normalized_quality"] < 0.65


def test_estimate_completion_and_ewma():
    st = lambda b: 1.0 + 0.1 * b  # noqa: E731
    assert estimate_completion(0.0, 0.0, 0, 4, st) == pytest.approx(1.1)
    assert estimate_completion(0.0, 2.0, 5, 4, st) == pytest.approx(2.0 + 1.4 + 1.2)
    e = EwmaRate(halflife=4)
    for k in range(100):
        e.update(k * 0.25)
    assert e.rate == pytest.approx(4.0)


class TwoStepMDP(gym.Env):
    """State 0: action 0 ends with reward 0.5; action 1 gives 0 and leads to state 1, where action 0 gives 1.0 and
    action 1 gives 0.1 (both end). With gamma 0.9 the best first action is 1 (0.9 > 0.5): it needs bootstrapping."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return np.array([1, 0], np.float32), {}

    def step(self, action):
        if self.s == 0 and action == 1:
            self.s = 1
            return np.array([0, 1], np.float32), 0.0, False, False, {}
        r = (0.5 if action == 0 else 0.0) if self.s == 0 else (1.0 if action == 0 else 0.1)
        return np.zeros(2, np.float32), r, True, False, {}


def test_double_dqn_converges_to_the_best_action_on_a_toy_mdp():
    q, log = train_dqn(TwoStepMDP(), DQNConfig(total_steps=3000, learning_starts=100, batch_size=32, gamma=0.9,
                                               exploration_fraction=0.5, seed=1), progress=False)
    with __import__("torch").no_grad():
        values = q(__import__("torch").tensor([[1, 0], [0, 1]], dtype=__import__("torch").float32)).numpy()
    assert values[0].argmax() == 1 and values[1].argmax() == 0
    assert values[0, 1] == pytest.approx(0.9, abs=0.1) and values[1, 0] == pytest.approx(1.0, abs=0.1)


def test_double_dqn_target_uses_online_argmax_and_target_values():
    import torch

    online, target = QNetwork(2, 2, 4), QNetwork(2, 2, 4)
    nxt = torch.tensor([[1.0, 0.0]])
    a = online(nxt).argmax(1)
    y = double_dqn_targets(online, target, torch.tensor([1.0]), nxt, torch.tensor([0.0]), 0.5)
    assert y.item() == pytest.approx(1.0 + 0.5 * target(nxt)[0, a].item())
    assert double_dqn_targets(online, target, torch.tensor([1.0]), nxt, torch.tensor([1.0]), 0.5).item() == 1.0


def test_router_learns_to_degrade_under_load_and_round_trips(tmp_path):
    p = toy_profile()
    cfg = SimulatorConfig(rate=(0.5, 60), duration_s=20, deadline_s=2.0)
    router, _ = train_router(p, cfg, DQNConfig(total_steps=6000, seed=0), progress=False)
    pols = {**baselines(p, cfg.max_batch), "router": router}
    res = sweep(p, cfg, pols, rates=[1, 16, 48], seeds=[0])
    avail = {n: [runs[0]["availability"] for runs in d.values()] for n, d in res.items()}
    assert avail["router"][-1] > avail["static_best"][-1] + 0.3  # keeps serving where static best collapses
    assert res["router"][1][0]["normalized_quality"] > 0.9  # and serves high quality when idle
    ratios = paper_ratios(res)
    assert ratios["sustainable_rate"]["router"] >= ratios["sustainable_rate"]["static_best"]
    router.save(tmp_path / "r")
    again = Router.load(tmp_path / "r")
    st = RouterState(task=1, queue_lengths=[0, 3, 9], running=[1, 8, 8], rate=12.0)
    assert again.choose(st) == router.choose(st) and again.levels == p.names
    with pytest.raises(FileExistsError):
        router.save(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="not a saved router"):
        Router.load(tmp_path)


def test_router_numpy_inference_matches_the_q_network():
    import torch

    from hf_ext.serving.policies import ObsSpec

    spec = ObsSpec(n_tasks=2, n_levels=3)
    q = QNetwork(spec.dim, 3)
    router = Router(q, spec, ["a", "b", "c"], ["x", "y"])
    obs = np.random.default_rng(0).random((5, spec.dim)).astype(np.float32)
    with torch.no_grad():
        assert np.allclose(router.q_values(obs), q(torch.from_numpy(obs)).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        Router(QNetwork(spec.dim + 1, 3), spec, ["a", "b", "c"], ["x", "y"])


def test_soft_reward_decays_with_lateness():
    from hf_ext.serving.policies import soft_reward

    assert soft_reward(0.8, 1.0, 2.0, 0.5) == 0.8
    assert soft_reward(0.8, 3.0, 2.0, 0.5) == pytest.approx(0.8 * np.exp(-1.0))
    p = toy_profile()
    hard = run_policy(p, SimulatorConfig(rate=30, duration_s=10, reward="hard", drop_expired=False), StaticPolicy(2), 0)
    soft = run_policy(p, SimulatorConfig(rate=30, duration_s=10, reward="soft", drop_expired=False), StaticPolicy(2), 0)
    assert soft["normalized_quality"] > hard["normalized_quality"] and soft["availability"] == hard["availability"]
