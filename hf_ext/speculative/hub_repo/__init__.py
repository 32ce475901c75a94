"""A Hub-style repository folder: ``custom_generate/generate.py`` for ``generate(custom_generate=<this folder>)``."""
