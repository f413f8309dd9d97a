"""The embedded default model: a procedural world, its captions and the small model trained on them."""
