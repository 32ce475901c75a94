"""Tiered tensor caching for training (10Cache, Afroz et al., SoCC 2025): parameters, gradients and optimizer
states over a device tier, pinned host memory and NVMe, with profile-driven prefetch and Belady eviction.

``TieredCacheCallback`` plugs into ``transformers.Trainer``; ``TieredCachePlugin.prepare`` into an ``accelerate``
loop; ``TieredEngine`` is the engine both use.
"""

from ..common.import_utils import lazy_getattr

_import_structure = {
    "config": ["TieredCacheConfig", "parse_bytes"],
    "attach": ["TieredEngine"],
    "callback": ["TieredCacheCallback"],
    "plugin": ["TieredCachePlugin"],
    "metrics": ["TieredCacheStats"],
    "storage": ["TieredCacheError"],
}
__all__ = sorted(n for names in _import_structure.values() for n in names)
__getattr__ = lazy_getattr(__name__, globals(), _import_structure, ())
