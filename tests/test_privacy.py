"""Pure parts of hf_ext.privacy: ROUGE-N recall, prefix split, prompt stripping, SaMIA scores, metrics, data."""

import json
import zlib

import numpy as np
import pytest

from hf_ext.privacy.data import load_mia_dataset
from hf_ext.privacy.metrics import auroc, membership_metrics, tpr_at_fpr
from hf_ext.privacy.samia import (
    SamiaConfig,
    compute_samia,
    rouge_n_recall,
    samia_scores,
    split_prefix,
    strip_prompt,
    zlib_length,
)

# ------------------------------------------------------------------------------------------ ROUGE-N recall


@pytest.mark.parametrize(
    "candidate, reference, n, expected",
    [
        ("the cat sat", "the cat sat", 1, 1.0),
        ("the cat", "the cat sat on the mat", 1, 2 / 6),
        # clipping: "the" occurs twice in the reference, so four in the candidate count twice
        ("the the the the", "the cat sat on the mat", 1, 2 / 6),
        ("the the the cat", "the cat sat on the mat", 1, 3 / 6),
        # case is kept: "The" is not "the"
        ("The Cat", "the cat", 1, 0.0),
        ("The cat", "the cat", 1, 0.5),
        # punctuation stays attached to words (whitespace tokens)
        ("mat.", "mat", 1, 0.0),
        # empty continuation
        ("", "the cat sat", 1, 0.0),
        ("   ", "the cat sat", 1, 0.0),
        # bigrams: reference bigrams (a b) (b c) (c d); candidate holds (a b) and (c d)
        ("a b x c d", "a b c d", 2, 2 / 3),
        # bigram clipping: (a b) twice in the candidate, once in the reference
        ("a b a b", "a b c", 2, 1 / 2),
        # order matters for n = 2 but not n = 1
        ("b a", "a b", 2, 0.0),
        ("b a", "a b", 1, 1.0),
    ],
)
def test_rouge_n_recall_hand_computed(candidate, reference, n, expected):
    assert rouge_n_recall(candidate, reference, n) == pytest.approx(expected)


def test_rouge_n_recall_accepts_word_lists_and_rejects_bad_n():
    assert rouge_n_recall(["x", "y"], ["y", "z"], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n must be in 1..9"):
        rouge_n_recall("a", "a", 0)


def test_rouge_is_recall_not_f_measure():
    # precision would be 1/10 here; F-measure about 0.18; recall is 1
    assert rouge_n_recall("a b c d e f g h i x", "x", 1) == 1.0


# ---------------------------------------------------------------------------------- prefix split, stripping


def test_split_prefix_floor_and_errors():
    assert split_prefix("a b c d e", 0.5) == (["a", "b"], ["c", "d", "e"])
    assert split_prefix("a  b\nc\td", 0.5) == (["a", "b"], ["c", "d"])
    with pytest.raises(ValueError, match="text 3 has 1 whitespace words: too short"):
        split_prefix("lonely", 0.5, index=3)
    with pytest.raises(ValueError, match="too short"):
        split_prefix("a b c", 0.5, ngram=3)  # reference of 2 words holds no trigram


def test_strip_prompt():
    prefix = ["the", "cat", "sat"]
    assert strip_prompt("the cat sat on the mat", prefix) == ["on", "the", "mat"]
    assert strip_prompt("the  cat\nsat on", prefix) == ["on"]  # whitespace-insensitive match
    assert strip_prompt("on the mat", prefix) == ["on", "the", "mat"]  # continuation only: unchanged
    assert strip_prompt("The cat sat on", prefix) == ["The", "cat", "sat", "on"]  # case-sensitive match
    assert strip_prompt("the cat sat", prefix) == []


def test_samia_scores_strip_changes_the_score():
    text = "one two three four five six"  # prefix one two three | reference four five six
    sample = "one two three four five six"
    assert samia_scores([text], [[sample]]) == [1.0]
    # without stripping the prompt words only add non-reference words, recall unchanged here...
    assert samia_scores([text], [[sample]], strip=False) == [1.0]
    # ...but they do count when the reference repeats prefix words
    text2 = "a b c a b c"
    assert samia_scores([text2], [["a b c"]], strip=True) == [0.0]  # nothing after the prompt
    assert samia_scores([text2], [["a b c"]], strip=False) == [1.0]


def test_samia_scores_mean_and_zlib():
    text = "p1 p2 p3 r1 r2 r3 r4"  # prefix 3 words, reference r1..r4
    samples = [["r1 r2 x", "r1 r2 r3 r4", ""]]
    assert samia_scores([text], samples) == [pytest.approx((0.5 + 1.0 + 0.0) / 3)]
    zl = samia_scores([text], samples, zlib=True)[0]
    expect = (0.5 * len(zlib.compress(b"r1 r2 x")) + 1.0 * len(zlib.compress(b"r1 r2 r3 r4"))) / 3
    assert zl == pytest.approx(expect)
    assert zlib_length("r1 r2 x") == len(zlib.compress(b"r1 r2 x"))


def test_samia_bad_inputs():
    texts = ["a b c d", "e f g h"]
    with pytest.raises(ValueError, match="samples has 1 entries but references has 2"):
        samia_scores(texts, [["c d"]])
    with pytest.raises(ValueError, match=r"samples\[1\] must be a non-empty list"):
        samia_scores(texts, [["c d"], []])
    with pytest.raises(ValueError, match=r"samples\[0\] must be a non-empty list of strings, got str"):
        samia_scores(texts, ["c d", "g h"])
    with pytest.raises(ValueError, match="text 1 has 1 whitespace words"):
        samia_scores(["a b c d", "short"], [["x"], ["y"]])
    with pytest.raises(ValueError, match="labels has 3 entries but there are 2"):
        compute_samia(texts, [["c"], ["g"]], labels=[1, 0, 1])
    with pytest.raises(ValueError, match="labels must be 0 .* or 1"):
        compute_samia(texts, [["c"], ["g"]], labels=[1, 2])
    with pytest.raises(ValueError, match="labels must be 0 .* or 1"):
        compute_samia(texts, [["c"], ["g"]], labels=["1", "0"])
    with pytest.raises(ValueError, match="both members"):
        compute_samia(texts, [["c"], ["g"]], labels=[1, 1])
    with pytest.raises(ValueError, match="model and tokenizer"):
        compute_samia(texts)
    with pytest.raises(ValueError, match="not both"):
        compute_samia(texts, [["c"], ["g"]], model=object(), tokenizer=object())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_samples": 0}, "num_samples"), ({"prefix_ratio": 1.0}, "prefix_ratio"), ({"ngram": 0}, "ngram"),
     ({"top_p": 0.0}, "top_p"), ({"temperature": 0}, "temperature"), ({"max_new_tokens": 0}, "max_new_tokens")],
)
def test_samia_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamiaConfig(**kwargs)


# ------------------------------------------------------------------------------------------------- metrics


def test_auroc_and_tpr_match_scikit_learn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    labels = np.array([1] * 30 + [0] * 30)
    scores = rng.normal(size=60) + 0.8 * labels
    scores[5] = scores[40]  # a tie across classes
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert tpr_at_fpr(scores, labels, 0.1) == pytest.approx(tprs[fprs <= 0.1].max())
    assert tpr_at_fpr(scores, labels, 0.1, mode="nearest") == pytest.approx(tprs[np.argmin(np.abs(fprs - 0.1))])


def test_tpr_semantics_le_vs_nearest_on_fixed_scores():
    # members 0.9 0.8 0.4 0.3, non-members 0.7 0.2 0.1: ROC points (fpr, tpr): (0,0) (0,.5) (1/3,.5) (1/3,1)...
    scores = [0.9, 0.8, 0.4, 0.3, 0.7, 0.2, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 0]
    assert auroc(scores, labels) == pytest.approx(10 / 12)
    assert tpr_at_fpr(scores, labels, 0.1, "le") == 0.5  # no point with fpr in (0, 0.1]
    assert tpr_at_fpr(scores, labels, 0.3, "le") == 0.5
    assert tpr_at_fpr(scores, labels, 0.3, "nearest") == 0.5  # nearest is fpr 1/3, its first point
    assert tpr_at_fpr(scores, labels, 0.34, "le") == 1.0
    assert membership_metrics(scores, labels, 0.34) == {"auroc": pytest.approx(10 / 12), "tpr_at_fpr": 1.0,
                                                         "fpr": 0.34}
    assert auroc([-s for s in scores], labels) == pytest.approx(2 / 12)  # higher = member matters


def test_metric_errors():
    with pytest.raises(ValueError, match="fpr must be in"):
        tpr_at_fpr([0.1, 0.2], [0, 1], fpr=1.5)
    with pytest.raises(ValueError, match="mode must be"):
        tpr_at_fpr([0.1, 0.2], [0, 1], mode="closest")
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan"), 0.2], [0, 1])


# ---------------------------------------------------------------------------------------------------- data


def test_load_wikimia_jsonl(tmp_path):
    rows = [{"input": "members were here long ago", "label": 1}, {"input": "a new text from today", "label": 0}]
    f = tmp_path / "mia.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_mia_dataset(f)
    assert data.texts == [r["input"] for r in rows] and data.labels == [1, 0] and len(data) == 2

    nolab = tmp_path / "nolab.jsonl"
    nolab.write_text(json.dumps({"input": "x y"}) + "\n")
    assert load_mia_dataset(nolab, require_labels=False).labels is None
    with pytest.raises(ValueError, match="no label column 'label'"):
        load_mia_dataset(nolab)
    with pytest.raises(ValueError, match="no text column 'text'"):
        load_mia_dataset(f, text_column="text")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "x y", "label": 3}) + "\n")
    with pytest.raises(ValueError, match="must be 0"):
        load_mia_dataset(bad)
    with pytest.raises(FileNotFoundError):
        load_mia_dataset(tmp_path / "missing.jsonl")
