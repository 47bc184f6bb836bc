"""Build tools for the bundled small models (the generated corpus and the GPT-2-style models
trained on it).  Not part of the runtime package: ``python -m modelbuild.small_models``."""
