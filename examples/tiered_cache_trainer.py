"""Fine-tune with ``transformers.Trainer`` while the tiered cache keeps only a quarter of the training state
(parameters, gradients, Adam m and v) in the device tier and the rest on an NVMe folder.

    python examples/tiered_cache_trainer.py --tiny
    python examples/tiered_cache_trainer.py --nvme /nvme/hf_ext_cache     # Gemma 3 270M, a few steps

Losses are bit-for-bit those of the same Trainer run without the callback (fp32); the callback logs hit rates,
stall time and bytes per link through ``on_log``.
"""

import tempfile

import torch
from _common import parser, setup
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import hf_ext
from hf_ext.common.data import load_text
from hf_ext.common.models import load_model

p = parser(__doc__.splitlines()[0])
p.add_argument("--nvme", default=None, help="NVMe folder (default: a temporary folder)")
p.add_argument("--steps", type=int, default=4)
args = p.parse_args()
path, text, out = setup(args)
model, tokenizer = load_model(path)
model.train()
seqlen = 32 if args.tiny else 256
ids = tokenizer(load_text(text)[: 200_000], return_tensors="pt").input_ids[0]
blocks = ids[: (len(ids) // seqlen) * seqlen].view(-1, seqlen)[: 4 * args.steps]
ds = Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})

state = 4 * sum(q.numel() * q.element_size() for q in model.parameters())
nvme = args.nvme or tempfile.mkdtemp(prefix="hf_ext_nvme_")
cfg = hf_ext.TieredCacheConfig(device_budget=max(state // 4, 2 << 20) if not args.tiny else state // 2,
                               host_budget=0, nvme_path=nvme, device_pool_divisor=1.0)
targs = TrainingArguments(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=2,
                          gradient_accumulation_steps=2, logging_steps=1, save_strategy="no", report_to=[],
                          use_cpu=not torch.cuda.is_available(), optim="adamw_torch", learning_rate=1e-4)
with hf_ext.TieredCacheCallback(cfg) as cb:
    Trainer(model, targs, train_dataset=ds, callbacks=[cb]).train()
last = cb.log_history[-2] if len(cb.log_history) > 1 else cb.log_history[-1]
print(f"tiered cache: device hit rate {last['tiered/device_hit_rate']:.1%}, stall "
      f"{last['tiered/stall_seconds']:.2f} s, NVMe read {last['tiered/bytes_nvme_to_device'] / 2**20:.1f} MiB, "
      f"allocations {int(last['tiered/allocations'])}")
