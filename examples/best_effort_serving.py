"""Learned best-effort serving: measure quality levels, train the Double-DQN router in the simulator, serve it over
an OpenAI-compatible API on 127.0.0.1 and load it.

    python examples/best_effort_serving.py          # Gemma 3 270M: a 32k-token head, and the full model
    python examples/best_effort_serving.py --tiny   # a random tiny Llama, seconds

Command-line equivalent: ``hf-ext serve profile --level default@vocab=32768 --level default --out p.json``,
``hf-ext serve train-router --profile p.json --out router``, ``hf-ext serve --level ... --profile p.json --router
router`` and ``hf-ext bench serve --url http://127.0.0.1:8000 --rate 2``.
"""

import socket
import threading
import time

import openai
import uvicorn
from _common import parser, setup

from hf_ext.serving import (
    BestEffortServer,
    DQNConfig,
    LoadConfig,
    ServerConfig,
    SimulatorConfig,
    build_app,
    default_tasks,
    measure_profile,
    run_load,
    train_router,
)
from hf_ext.serving.levels import parse_levels

args = parser(__doc__.splitlines()[0]).parse_args()
path, text, out = setup(args)
out.mkdir(parents=True, exist_ok=True)

# 1. Levels: the full model and a cheaper view of it (fewer blocks / a reduced vocabulary, every weight shared).
levels = parse_levels([f"{path}@layers=1@vocab=128" if args.tiny else f"{path}@vocab=32768", path])
tasks = default_tasks(text, n_tasks=1 if args.tiny else 2, texts_per_task=2 if args.tiny else 4)
profile = measure_profile(levels, tasks, batch_sizes=(1, 4, 8), max_new_tokens=4 if args.tiny else 16,
                          repeats=1 if args.tiny else 2)
profile.save(out / "profile.json")
for lv in profile.levels:
    print(f"{lv.name}: {lv.service_s[0]:.3f} s per request alone, {lv.service_s[-1]:.3f} s per batch of 8, "
          f"quality {lv.quality}")

# 2. The router, trained in the simulator on the measured profile.
best = profile.levels[profile.best_level()].service_time(1)
deadline = 4 * best
sim = SimulatorConfig(rate=(0.25 * profile.capacity(profile.best_level(), 8),
                            2 * profile.capacity(profile.fastest_level(), 8)), duration_s=30, deadline_s=deadline)
router, log = train_router(profile, sim, DQNConfig(total_steps=2000 if args.tiny else 15000))
router.save(out / "router", overwrite=True)

# 3. Serve on loopback, talk to it with the official client, then load it.
server = BestEffortServer(levels, profile=profile, router=router, config=ServerConfig(default_deadline_s=deadline))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning"))
thread = threading.Thread(target=uv.run, daemon=True)
thread.start()
while not uv.started:
    time.sleep(0.1)
try:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    out_ = client.completions.create(model="hf-ext-best-effort", prompt="The Python standard library", max_tokens=8)
    print(f"completion from level {out_.model_extra['hf_ext']['level']}: {out_.choices[0].text!r}")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="hf-ext-best-effort", prompt="A module groups", max_tokens=8, stream=True))
    print(f"streamed: {streamed!r}")
    summary = run_load(LoadConfig(url=f"http://127.0.0.1:{port}", rate=4 * router.spec.rate_scale / 8,
                                  duration_s=3 if args.tiny else 20, max_requests=60, max_tokens=4,
                                  deadline_s=deadline))
    print(f"best-effort server answered {summary['requests']} requests: {summary['status_counts']}, "
          f"levels {summary['level_counts']}, deadline attainment {summary['deadline_attainment']:.2f}")
finally:
    uv.should_exit = True
    thread.join(timeout=30)
