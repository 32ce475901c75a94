"""SaMIA: sampling-based pseudo-likelihood membership inference, as an ``evaluate`` metric.

Thin wrapper: the logic lives in ``hf_ext.privacy.samia``. Imports are absolute (``hf_ext``), never relative,
because this file is also copied into evaluate's module cache, where relative imports do not resolve.
"""

import datasets
import evaluate

from hf_ext.privacy.samia import SamiaConfig, compute_samia

_CITATION = """\
@article{kaneko2024samia,
  title     = {Sampling-based Pseudo-Likelihood for Membership Inference Attacks},
  author    = {Kaneko, Masahiro and Ma, Youmi and Wata, Yuki and Okazaki, Naoaki},
  journal   = {arXiv preprint arXiv:2404.11262},
  year      = {2024}
}
"""

_DESCRIPTION = """\
SaMIA decides whether a text was in a language model's training data using only text the model generates, so it
works when likelihoods are hidden. Each text is split into a prefix (the first `prefix_ratio` of its whitespace
words) and a reference (the rest). The model samples continuations of the prefix; the score is the mean ROUGE-N
recall (clipped n-gram overlap divided by the reference's n-gram count, case-sensitive whitespace tokens) of the
reference against each continuation. With `zlib=True` (SaMIA*zlib) each sample's recall is multiplied by the
zlib-compressed byte length of the continuation. Higher score = more likely a member. With 0/1 labels the metric
also returns AUROC and the true-positive rate at a fixed false-positive rate.
"""

_KWARGS_DESCRIPTION = """
Args:
    references (`list` of `str`): the target texts (prefix + reference part), whose membership is tested.
    predictions (`list` of `list` of `str`, optional): precomputed samples per text: continuations of the prefix,
        or prompt + continuation (the prompt words are then removed). Give this (or its alias `samples`) or
        `model` + `tokenizer`. As a feature it also works with `add_batch(references=..., predictions=...)`.
    labels (`list` of `int`, optional): 1 = member, 0 = non-member. Adds `auroc`, `tpr_at_fpr` and `fpr`.
    model (`PreTrainedModel`, optional): causal LM to sample continuations from.
    tokenizer (`PreTrainedTokenizerBase`, optional): its tokenizer.
    num_samples (`int`, defaults to 10): continuations per text when sampling.
    prefix_ratio (`float`, defaults to 0.5): fraction of whitespace words used as the prompt.
    ngram (`int`, defaults to 1): N of ROUGE-N recall.
    zlib (`bool`, defaults to `False`): SaMIA*zlib, multiply by the continuation's zlib length.
    fpr (`float`, defaults to 0.1): false-positive rate at which `tpr_at_fpr` is reported.
    tpr_mode (`str`, defaults to `"le"`): `"le"`: best TPR over ROC points with FPR <= `fpr`; `"nearest"`: TPR of
        the ROC point whose FPR is closest to `fpr` (the official SaMIA script).
    temperature (`float`, defaults to 1.0), top_k (`int`, defaults to 50), top_p (`float`, defaults to 1.0):
        sampling settings.
    max_new_tokens (`int`, optional): new tokens per sample; default: the reference's token count.
    batch_size (`int`, defaults to 32): sequences per `generate` call.
    seed (`int`, defaults to 0): sampling seed (the global RNG state is restored afterwards).
    strip_prompt (`bool`, defaults to `True`): remove leading prompt words from precomputed samples.
    progress (`bool`, defaults to `True`): show a progress bar while sampling from `model`.
Returns:
    scores (`list` of `float`): SaMIA score per text, higher = member.
    auroc (`float`): area under the ROC curve (only with `labels`).
    tpr_at_fpr (`float`): true-positive rate at `fpr` (only with `labels`).
    fpr (`float`): the false-positive rate used (only with `labels`).
Examples:
    Precomputed continuations; the first text's reference is "the mat all day":

    >>> import evaluate
    >>> import hf_ext  # installs the module where evaluate.load finds it offline
    >>> samia = evaluate.load("samia")
    >>> texts = ["the cat sat on the mat all day", "stocks fell sharply on monday after the report"]
    >>> samples = [["the mat all day", "the mat all night"], ["a storm hit the coast", "it rained"]]
    >>> samia.compute(references=texts, samples=samples)
    {'scores': [0.875, 0.125]}

    With membership labels, and SaMIA*zlib:

    >>> samia.compute(references=texts, samples=samples, labels=[1, 0])
    {'auroc': 1.0, 'tpr_at_fpr': 1.0, 'fpr': 0.1, 'scores': [0.875, 0.125]}
    >>> samia.compute(references=texts, samples=samples, zlib=True)
    {'scores': [20.875, 3.625]}

    Batch by batch, with the sampled texts as `predictions`:

    >>> for text, sample in zip(texts, samples):
    ...     samia.add_batch(references=[text], predictions=[sample])
    >>> samia.compute()
    {'scores': [0.875, 0.125]}

    Samples that still hold the prompt lose it first; matching is case-sensitive ("Monday" is not "monday"):

    >>> full = [["the cat sat on the mat all day"], ["stocks fell sharply on Monday after the report"]]
    >>> samia.compute(references=texts, samples=full)
    {'scores': [1.0, 0.75]}

    Sampling from a model (a tiny random one here):

    >>> model, tok = hf_ext.tiny_model("llama")
    >>> out = samia.compute(references=texts, model=model, tokenizer=tok, num_samples=2, labels=[1, 0],
    ...                     progress=False)
    >>> sorted(out), len(out["scores"])
    (['auroc', 'fpr', 'scores', 'tpr_at_fpr'], 2)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Samia(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/2404.11262", "https://github.com/nlp-titech/samia"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """SaMIA scores of `references` (and AUROC / TPR with `labels`); the inputs follow."""
        # evaluate needs every feature in every batch; without sampled texts (sample from `model` now, or the
        # `samples` alias) each text gets an empty list, which `_compute` reads as "nothing precomputed".
        samples = kwargs.pop("samples", None)
        if samples is not None and predictions is not None:
            raise ValueError("Pass the sampled texts once: predictions or its alias samples, not both.")
        predictions = samples if samples is not None else predictions
        if predictions is None and references is not None:
            predictions = [[] for _ in references]
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        model=None,
        tokenizer=None,
        num_samples=10,
        prefix_ratio=0.5,
        ngram=1,
        zlib=False,
        fpr=0.1,
        tpr_mode="le",
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        max_new_tokens=None,
        batch_size=32,
        seed=0,
        strip_prompt=True,
        progress=True,
    ):
        samples = None if all(len(p) == 0 for p in predictions) else [list(p) for p in predictions]
        config = SamiaConfig(
            num_samples=num_samples, prefix_ratio=prefix_ratio, ngram=ngram, zlib=zlib, temperature=temperature,
            top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
        )
        return compute_samia(
            references, samples=samples, labels=labels, model=model, tokenizer=tokenizer, config=config, fpr=fpr,
            tpr_mode=tpr_mode, strip=strip_prompt, progress=progress,
        )
