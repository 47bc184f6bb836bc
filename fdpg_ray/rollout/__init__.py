"""Rollout: the samplers of the proposal q (vLLM and transformers), offline proposals, and
the transfer of the policy's weights into a sampler.  No Ray: the actors in ``actors/`` hold these."""
