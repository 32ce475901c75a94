"""The bundled demo domain: question answering about the Python standard library.

* ``seeds.jsonl``: 64 (question, answer) pairs, the only labeled data a run trains on.
* ``heldout.jsonl``: 105 different questions with reference answers; used only to score, never to train.
* the unlabeled pool: paragraphs of the ``library/`` part of the python3.11-doc reST text (``hf_ext.common.data``'s
  "pydocs" eval split), read at run time and not shipped. :func:`doc_passages` cuts documents into passages and
  prefixes each description with the signature it documents (``math.sqrt(x): Return the square root of x.``).

Every row names the doc file it comes from (``source``) and a phrase (``evidence``) that :func:`evidence_found`
finds in that file after :func:`normalize_rst`; ``DATA_CARD.md`` says how the rows were written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SEEDS_FILE = DATA_DIR / "seeds.jsonl"
HELDOUT_FILE = DATA_DIR / "heldout.jsonl"
_DIRECTIVES = ("function", "method", "class", "data", "attribute", "exception", "decorator", "classmethod",
               "staticmethod", "coroutinefunction", "coroutinemethod", "opcode", "envvar", "describe")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_seeds() -> list[dict]:
    """The 64 bundled seed rows (``id``, ``question``, ``answer``, ``source``, ``evidence``)."""
    return _read_jsonl(SEEDS_FILE)


def load_heldout() -> list[dict]:
    """The bundled held-out rows (same fields as the seeds); they never enter training."""
    return _read_jsonl(HELDOUT_FILE)


def normalize_rst(text: str, lower: bool = True) -> str:
    """reST to plain text for matching: roles (``:func:`x <y>```) to their text, literals, emphasis, footnote and
    link marks dropped, whitespace collapsed."""
    text = re.sub(r":[a-z:]+:`~?([^`<]*?)\s*(<[^>`]*>)?`", r"\1", text)
    text = re.sub(r"\s*\[\d+\]_", "", text)
    text = re.sub(r"(?<=[A-Za-z0-9])_(?=[\s.,;:)])", "", text)
    text = text.replace("``", "").replace("`", "").replace("*", "").replace("\\", "")
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower() if lower else text


def evidence_found(row: dict, root: str | Path | None = None) -> bool:
    """Whether ``row["evidence"]`` occurs in the python3.11-doc file ``row["source"]`` (normalized, any case)."""
    from ..common.data import pydocs_root

    path = Path(root or pydocs_root()) / row["source"]
    return path.is_file() and row["evidence"].lower() in normalize_rst(path.read_text(encoding="utf-8"))


def doc_passages(documents: list[str], min_words: int = 6, max_words: int = 160) -> list[str]:
    """Prose passages of reST documents: one per paragraph, markup-only blocks (tables, code, directives' options)
    dropped, each description prefixed with the ``module.name(signature)`` it belongs to."""
    out: list[str] = []
    for doc in documents:
        module, cls, signature, code_indent = "", "", "", None
        for block in re.split(r"\n\s*\n", doc):
            stripped = block.strip()
            if not stripped:
                continue
            indent = len(block) - len(block.lstrip(" "))
            if code_indent is not None and indent > code_indent:
                continue  # the literal (code) block after a paragraph ending in "::"
            code_indent = indent if stripped.endswith("::") else None
            m = re.match(r"\.\.\s+(?:py:)?module::\s*(\S+)", stripped)
            if m:
                module, cls = m.group(1), ""
                continue
            m = re.match(r"\.\.\s+(?:py:)?(\w+)::\s*(.+)", stripped)
            if m and m.group(1) in _DIRECTIVES:
                name = m.group(2).splitlines()[0].strip().rstrip("\\").strip()
                owner = cls if indent > 0 and cls else module
                if "." not in name.split("(")[0] and owner:
                    name = f"{owner}.{name}"
                if m.group(1) in ("class", "exception") and indent == 0:
                    cls = name.split("(")[0]
                signature = name
                continue
            if stripped.startswith(("..", "|", "+-", "+=", "=", "-", "*", ">>>", "::", "#", ":")) or \
                    stripped.endswith("::"):
                continue
            text = normalize_rst(stripped, lower=False)
            if indent == 0:
                signature, cls = "", ""  # an unindented paragraph ends the last directive's body
            if signature:
                text = f"{signature}: {text}"
            words = text.split()
            if len(words) < min_words:
                continue
            out.append(" ".join(words[:max_words]))
    return out


def load_pool(source: str = "pydocs", min_words: int = 6, max_words: int = 160) -> list[str]:
    """Unlabeled pool passages of ``source`` (default: the python3.11-doc ``library/`` section)."""
    from ..common.data import load_text

    return doc_passages(load_text(source, split="eval"), min_words=min_words, max_words=max_words)
