"""Fixtures shared by the test files."""

import pytest


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
