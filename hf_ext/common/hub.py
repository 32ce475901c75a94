"""Model cards and Hub helpers shared by every method that saves checkpoints.

Card templates are Jinja files in ``hf_ext/model_cards/`` rendered through ``huggingface_hub.ModelCard`` (YAML
metadata via ``ModelCardData``). ``attach_model_card`` makes a model write its card on every ``save_pretrained``
and therefore on ``push_to_hub``, which saves through ``save_pretrained``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from transformers import PreTrainedModel

from .utils import atomic_write_text

TEMPLATES = Path(__file__).resolve().parent.parent / "model_cards"
PROJECT_URL = "https://pypi.org/project/hf-ext/"
"""Where a model card points readers for hf-ext (the package's index page; pyproject's ``Homepage``)."""


def hub_base_model(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it reads as a Hub id (``org/name`` or ``name``), else None: a local folder must not
    appear as ``base_model`` in a card's YAML header, where the Hub would link it."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    if name.startswith(("/", ".", "~")) or Path(name).expanduser().exists() or name.count("/") > 1:
        return None
    return name


def render_card(template: str, card_data: ModelCardData, **fields: Any) -> str:
    """Render ``model_cards/<template>.md`` with ``fields`` and ``card_data`` as YAML front matter."""
    path = TEMPLATES / f"{template}.md"
    if not path.is_file():
        raise FileNotFoundError(f"No model card template {template!r} in {TEMPLATES}.")
    return str(ModelCard.from_template(card_data, template_path=str(path), project_url=PROJECT_URL, **fields))


def attach_model_card(model: PreTrainedModel, make_card: Callable[[PreTrainedModel], str]) -> None:
    """After this, ``model.save_pretrained(d)`` also writes ``d/README.md`` from ``make_card(model)``, and
    ``model.push_to_hub(repo)`` uploads that card (not transformers' default one)."""
    original = type(model).save_pretrained

    @functools.wraps(original)
    def save_pretrained(save_directory: str | os.PathLike, *args, **kwargs):
        result = original(model, save_directory, *args, **kwargs)
        atomic_write_text(Path(save_directory) / "README.md", make_card(model))
        return result

    model.save_pretrained = save_pretrained

    # transformers' push_to_hub saves, then overwrites README.md with the repo's existing card (or a blank
    # template) before uploading; rewrite ours just before the upload so the pushed card is the generated one.
    upload = model._upload_modified_files

    @functools.wraps(upload)
    def _upload_modified_files(working_dir: str | os.PathLike, *args, **kwargs):
        atomic_write_text(Path(working_dir) / "README.md", make_card(model))
        return upload(working_dir, *args, **kwargs)

    model._upload_modified_files = _upload_modified_files
