"""``hf-ext demo`` row: one small ISARA iteration on the given model, held-out score before and after.

Sized for about a minute on an idle 2-core CPU (estimated, not measured: see the report): 4 generated samples of at
most 24 tokens, 1 in-context example, 2 LoRA steps of 2 rows and 8 held-out questions (12-token answers), so the
before / after difference is noise-sized; ``benchmarks/isara.py`` runs the real comparison.
The LoRA layers are removed again at the end, so later rows see the model unchanged.
"""

from __future__ import annotations

import tempfile

from ..common.demo import DemoContext, DemoRow

DEMO_HELDOUT = 8


def demo_rows(model, tokenizer, ctx: DemoContext) -> list[DemoRow]:
    from .domain import load_heldout, load_pool, load_seeds
    from .isara_config import ISARAConfig, default_sft_config
    from .isara_trainer import ISARATrainer

    sft = default_sft_config()
    sft.max_steps, sft.per_device_train_batch_size, sft.learning_rate, sft.logging_steps = 2, 2, 1e-3, 100
    with tempfile.TemporaryDirectory(prefix="hf_ext_isara_demo_") as tmp:
        cfg = ISARAConfig(output_dir=f"{tmp}/out", iterations=1, samples_per_iteration=4, icl_examples=1,
                          max_new_tokens=24, eval_max_new_tokens=12, pool_prefilter=64, sft=sft)
        trainer = ISARATrainer(model, tokenizer, seed_dataset=load_seeds(), pool=load_pool(), args=cfg,
                               eval_dataset=load_heldout()[:DEMO_HELDOUT])
        try:
            (report,) = trainer.train()
        finally:
            trainer.model.unload()  # strip the LoRA layers: the shared model stays as it was
    before, after = trainer.baseline, report.heldout
    return [DemoRow("alignment", f"ISARA 1 iteration ({report.generated} samples, {report.kept} kept)",
                    f"held-out score ({DEMO_HELDOUT} q)", after["mean"], before.mean,
                    note="ROUGE-L + embedding similarity; a tiny budget, see benchmarks/isara.py")]
