"""Models: where weights come from (bundled, SmolLM2, toy tasks, local folders, the hub),
LoRA adapters, and the limits of a model's context.  No Ray."""
