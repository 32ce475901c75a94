"""hf-ext's ``evaluate`` modules, each a folder ``<name>/`` holding ``<name>.py``, ``README.md`` (the metric card)
and ``requirements.txt``.

``evaluate.load("<name>")`` has no registration hook: it asks the Hub, then falls back to evaluate's module cache
``$HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--<name>/<64-hex>/<name>.py``, taking the newest file
by mtime. :func:`install` (run on ``import hf_ext``) writes our modules there, so loading by name works offline
(``HF_EVALUATE_OFFLINE=1`` skips the Hub attempt). The explicit, cache-free form is ``evaluate.load(path(name))``.

The cached copy is the module file itself: it imports its logic with absolute ``hf_ext`` imports, because evaluate
does not resolve relative imports from its cache. Set ``HF_EXT_NO_METRIC_INSTALL=1`` to skip the install.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CACHED_FILES = ("README.md", "requirements.txt")  # copied beside <name>.py when present


def available() -> list[str]:
    """Names of the evaluate modules shipped with hf-ext."""
    return sorted(p.name for p in _HERE.iterdir() if p.is_dir() and (p / f"{p.name}.py").is_file())


def path(name: str) -> str:
    """Folder of hf-ext's evaluate module ``name``, for ``evaluate.load(path(name))``."""
    folder = _HERE / name
    if not (folder / f"{name}.py").is_file():
        raise ValueError(f"hf-ext has no evaluate module {name!r}; available: {available()}.")
    return str(folder)


def modules_cache() -> Path:
    """evaluate's ``HF_MODULES_CACHE``: its live value when evaluate is imported, else from the same variables."""
    cfg = sys.modules.get("evaluate.config")
    if cfg is not None:
        return Path(cfg.HF_MODULES_CACHE)
    if os.environ.get("HF_MODULES_CACHE"):
        return Path(os.environ["HF_MODULES_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "modules"


def _module_files(name: str) -> dict[str, bytes]:
    folder = _HERE / name
    files = {f"{name}.py": (folder / f"{name}.py").read_bytes()}
    for extra in _CACHED_FILES:
        if (folder / extra).is_file():
            files[extra] = (folder / extra).read_bytes()
    return files


def _content_hash(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for fname in sorted(files):
        h.update(fname.encode() + b"\0" + files[fname] + b"\0")
    return h.hexdigest()  # 64 hex characters: the only directory names evaluate's cache lookup accepts


def _touch_init(folder: Path) -> None:
    init = folder / "__init__.py"
    if not init.exists():
        init.touch()


def _install_one(name: str, root: Path) -> Path:
    files = _module_files(name)
    parent = root / "evaluate_modules" / "metrics" / f"evaluate-metric--{name}"
    target = parent / _content_hash(files)
    main = target / f"{name}.py"
    if main.is_file():
        # Present already; make sure it is the newest version, since evaluate picks the newest by mtime.
        newest = max((p / f"{name}.py").stat().st_mtime for p in parent.iterdir() if (p / f"{name}.py").is_file())
        if main.stat().st_mtime < newest:
            now = time.time()
            os.utime(main, (now, max(now, newest + 1)))
        return target
    parent.mkdir(parents=True, exist_ok=True)
    for folder in (root, root / "evaluate_modules", root / "evaluate_modules" / "metrics", parent):
        _touch_init(folder)
    from ..common.utils import atomic_dir  # imports torch: only paid when something must be written

    try:
        with atomic_dir(target, overwrite=True) as tmp:  # evaluate's module cache
            for fname, data in files.items():
                (tmp / fname).write_bytes(data)
            (tmp / "__init__.py").touch()
    except OSError:
        if not main.is_file():  # another process may have installed the same content first
            raise
    return target


class _OurCachedModules(logging.Filter):
    """Drops evaluate's "using the latest cached version ... couldn't be found on the Hub" warning for our modules:
    the cached copy is the one we installed on purpose, so the warning would only alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "couldn't be found locally" not in msg:
            return True
        return not any(f"evaluate-metric--{name}" in msg for name in available())


def _quiet_cache_warning() -> None:
    log = logging.getLogger("evaluate.loading")  # evaluate's own logger name (evaluate.utils.logging)
    if not any(isinstance(f, _OurCachedModules) for f in log.filters):
        log.addFilter(_OurCachedModules())


def install(names: list[str] | None = None) -> dict[str, Path]:
    """Install hf-ext's evaluate modules into evaluate's module cache (idempotent, atomic, cheap when present).

    Never raises: a read-only or unusable cache only logs a warning, and ``evaluate.load(path(name))`` still works.

    Returns:
        ``{name: installed folder}`` for the modules installed or already present.
    """
    if os.environ.get("HF_EXT_NO_METRIC_INSTALL", "").lower() in ("1", "true", "yes"):
        return {}
    _quiet_cache_warning()
    done: dict[str, Path] = {}
    try:
        root = modules_cache()
        for name in names or available():
            done[name] = _install_one(name, root)
    except Exception as e:  # noqa: BLE001 - import hf_ext must never fail because of a cache
        # transformers' logger is imported here only: the common path must not pay for importing transformers.
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger(__name__).warning(
            "hf-ext could not install its evaluate modules into %s (%s: %s); evaluate.load('<name>') by name will "
            "not find them offline. Use evaluate.load(hf_ext.metrics.path('<name>')) instead.",
            modules_cache(), type(e).__name__, e,
        )
    return done
