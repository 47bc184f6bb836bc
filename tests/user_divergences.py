"""User f-divergences written in log t, loaded by tests as ``divergence: tests.user_divergences:NAME``."""

import math

import torch
import torch.nn.functional as F

LOG2 = math.log(2.0)


def js(log_t):
    """2 JS, as the built-in js, written by a user; pseudo-reward left to autograd."""
    u = log_t
    return torch.exp(u) * (LOG2 - F.softplus(-u)) + LOG2 - F.softplus(u)


js.report_scale = 0.5
js.f_star_zero = LOG2


def kl_with_reward(log_t):
    """Forward KL, f = -log t, with its own pseudo-reward r = 1/t."""
    return -log_t


kl_with_reward.pseudo_reward = lambda log_t: torch.exp(-log_t)


def rchi2(log_t):
    """Neyman chi^2 in the textbook form (1 - t)^2 / t; f*(0) = 1 found numerically."""
    t = torch.exp(log_t)
    return (1 - t) ** 2 / t


def shifted_kl(log_t):
    """f(1) = 1: not an f-divergence."""
    return 1.0 - log_t


def concave(log_t):
    """f(t) = log t: f(1) = 0 but concave."""
    return log_t


not_callable = 3
