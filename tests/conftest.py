"""Fixtures shared by the test files, and the test process's torch threads."""

import pytest
import torch

# One intra-op thread in the test process.  The suite's models are tiny and the machine it
# must run on has 2 cores, which the Ray actors, vLLM engines and learner workers of the
# integration tests also use: with torch's default of one thread per core the threads wait
# on each other (measured under load: a 30-step toy run 226 s with 2 threads, 43 s with 1;
# resume tests 130-160 s against 6 s).  Runs outside the tests keep torch's default.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance started the way a run starts it (actors.driver.init_ray with
    configs/amazing.yaml's ray settings: 8 logical CPUs), shut down after the module."""
    import ray

    from actors.driver import init_ray
    from fdpg_ray.config import load_config

    init_ray(load_config("configs/amazing.yaml"))
    yield ray
    ray.shutdown()
