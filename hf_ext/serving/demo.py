"""``hf-ext demo`` row (placeholder, replaced below)."""


def demo_rows(model, tokenizer, ctx) -> list:
    return []
