"""Rollout: the samplers of the proposal q (vLLM and transformers), offline proposals, and
the transfer of the policy's weights into a sampler.  Runs without Ray: the actors in
``actors/`` hold these.  (The object-store fallback, ``weight_sync.CPUWeightSync``, calls
``ray.put``/``ray.get`` only when it is handed Ray actor handles instead of samplers.)"""
