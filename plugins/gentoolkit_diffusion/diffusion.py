"""Gaussian diffusion (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): the noise
schedule, the forward process q, the fixed-variance reverse process p and the terms of the
variational bound.

Notation is the paper's, with t = 1..T: beta_t the noise added at step t, alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s <= t} alpha_s (alpha_bar_0 = 1), and

    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)                   (eq. 4)
    q(x_{t-1} | x_t, x_0) = N(mu~_t(x_t, x_0), beta~_t I)                                   (eqs. 6, 7)
        mu~_t  = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
    p(x_{t-1} | x_t)      = N(mu~_t(x_t, x0_hat), sigma_t^2 I),
        x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_bar_t), clipped to [-1, 1]

Tensors indexed by t have T + 1 entries, entry 0 standing for t = 0, so ``alpha_bar[t]`` reads
as the formula does. Every coefficient is computed in float64 and stored in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Schedule = Literal["linear", "cosine"]
Variance = Literal["large", "small"]
NoisePrediction = Callable[[Tensor, Tensor], Tensor]  # (x_t, t) -> eps_theta(x_t, t)


def betas_for(schedule: Schedule, timesteps: int) -> Tensor:
    """beta_1..beta_T in float64.

    ``linear``: Ho et al.'s 1e-4 to 0.02 over 1000 steps, both ends scaled by 1000 / T so that
    any T destroys the signal as much (Nichol & Dhariwal 2021). ``cosine``: alpha_bar_t =
    f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) pi / 2)^2 with s = 0.008 (Nichol & Dhariwal
    2021, eq. 17), each beta clipped to 0.999 so the last steps stay finite.
    """
    if schedule == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=0.999)
    s = 0.008
    f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) element by element, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2).square()) / var2 - 1)


def log_gaussian_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)) for standard normal Phi and lower < upper (either may be
    infinite), accurate far into both tails: a bin right of the mean is measured from the
    right, Phi(-lower) - Phi(-upper), so neither term rounds to 1."""
    right = lower + upper > 0
    a, b = torch.where(right, -upper, lower), torch.where(right, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int = 256) -> Tensor:
    """log P(x) of pixels x in {-1, -1 + 2/(levels-1), ..., 1} under N(mean, exp(log_scale)^2)
    integrated over each value's bin of width 2/(levels-1); the first and last bins reach to
    -inf and +inf, so the probabilities of all values sum to 1 (Ho et al. 2020, eq. 13)."""
    half = 1 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    lower = torch.where(x < -1 + half, -math.inf, (x - half - mean) * inv_scale)
    upper = torch.where(x > 1 - half, math.inf, (x + half - mean) * inv_scale)
    return log_gaussian_mass(lower, upper)


class GaussianDiffusion(nn.Module):
    """The T-step schedule and the maths of q and p; it has no parameters (its tensors are
    non-persistent buffers, rebuilt from the config and moved with the model)."""

    def __init__(self, timesteps: int, schedule: Schedule = "linear", variance: Variance = "large"):
        super().__init__()
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        self.timesteps = timesteps
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), betas_for(schedule, timesteps)])  # T+1, beta_0 = 0
        alpha = 1 - beta
        alpha_bar = torch.cumprod(alpha, 0)  # alpha_bar_0 = 1
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        one_minus_alpha_bar = 1 - alpha_bar
        one_minus_alpha_bar[0] = 1  # t = 0 is no step of q: this only keeps its unused entries finite
        posterior_variance = beta * (1 - alpha_bar_prev) / one_minus_alpha_bar  # beta~_t; 0 at t = 1
        # sigma_t^2: beta_t (large) or beta~_t (small); at t = 1 both take beta~_2, as in Ho et al.'s
        # code, since beta~_1 = 0 and the decoder needs a positive variance
        reverse_variance = (beta if variance == "large" else posterior_variance).clone()
        reverse_variance[:2] = posterior_variance[2]
        coefficients = {
            "beta": beta,
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_x0": alpha_bar_prev.sqrt() * beta / one_minus_alpha_bar,
            "posterior_xt": alpha.sqrt() * (1 - alpha_bar_prev) / one_minus_alpha_bar,
            "reverse_variance": reverse_variance,
        }
        for name, values in coefficients.items():
            self.register_buffer(name, values.float(), persistent=False)

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Coefficient ``name`` at the steps ``t`` (N), shaped N x 1 x 1 x 1 and typed like ``like``."""
        return getattr(self, name)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    # ------------------------------------------------------------------ q

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a draw from q(x_t | x_0)."""
        return self.at("sqrt_alpha_bar", t, x0) * x0 + self.at("sqrt_one_minus_alpha_bar", t, x0) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean mu~_t and variance beta~_t of q(x_{t-1} | x_t, x_0), for t >= 1."""
        mean = self.at("posterior_x0", t, x0) * x0 + self.at("posterior_xt", t, xt) * xt
        return mean, self.at("posterior_variance", t, xt)

    # ------------------------------------------------------------------ p

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0_hat from the predicted noise (eq. 4 solved for x_0), clipped to the data range [-1, 1]."""
        x0 = (xt - self.at("sqrt_one_minus_alpha_bar", t, xt) * eps) / self.at("sqrt_alpha_bar", t, xt)
        return x0.clamp(-1.0, 1.0)

    def p_mean_variance(self, xt: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and variance sigma_t^2 of p(x_{t-1} | x_t), and the x0_hat behind the mean."""
        x0 = self.predict_x0(xt, t, eps)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, self.at("reverse_variance", t, xt), x0

    def ddim_step(self, xt: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor, eta: float,
                  noise: Tensor | None) -> Tensor:
        """One DDIM update from step t to an earlier step t_prev (Song et al. 2021, eq. 12):

            x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - s^2) eps_hat + s z,
            s = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev),

        eps_hat the noise that x0_hat (clipped) implies. eta = 0 is deterministic; eta = 1 with
        t_prev = t - 1 is DDPM's ancestral step with the "small" variance beta~_t.
        """
        x0 = self.predict_x0(xt, t, eps)
        sqrt_ab, sqrt_one_minus_ab = self.at("sqrt_alpha_bar", t, xt), self.at("sqrt_one_minus_alpha_bar", t, xt)
        eps = (xt - sqrt_ab * x0) / sqrt_one_minus_ab
        ab, ab_prev = self.at("alpha_bar", t, xt), self.at("alpha_bar", t_prev, xt)
        s = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev - s.square()).clamp(min=0).sqrt() * eps
        return x_prev if noise is None or eta == 0 else x_prev + s * noise

    # ------------------------------------------------------- the bound

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per image, float64: no network involved."""
        t = torch.full((len(x0),), self.timesteps, device=x0.device)
        x0 = x0.double()
        mean, var = self.at("sqrt_alpha_bar", t, x0) * x0, 1 - self.at("alpha_bar", t, x0)
        return normal_kl(mean, var, torch.zeros_like(mean), torch.ones_like(var)).flatten(1).sum(1)

    def decoder_nll(self, predict: NoisePrediction, x0: Tensor, noise: Tensor) -> Tensor:
        """L_0 = -log p(x_0 | x_1) per image, float64: the discretised Gaussian of the 8-bit
        pixels around the mean of p(x_0 | x_1), at x_1 = q_sample(x_0, 1, noise)."""
        t = torch.ones(len(x0), dtype=torch.long, device=x0.device)
        x1 = self.q_sample(x0, t, noise)
        mean, var, _ = self.p_mean_variance(x1.double(), t, predict(x1, t).double())
        return -discretized_gaussian_log_likelihood(x0.double(), mean, 0.5 * var.log()).flatten(1).sum(1)

    def kl_term(self, predict: NoisePrediction, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) per image, float64, for steps
        t >= 2, at x_t = q_sample(x_0, t, noise)."""
        xt = self.q_sample(x0, t, noise)
        mean, var, _ = self.p_mean_variance(xt.double(), t, predict(xt, t).double())
        true_mean, true_var = self.q_posterior(x0.double(), xt.double(), t)
        return normal_kl(true_mean, true_var, mean, var).flatten(1).sum(1)

    def log_likelihood_bound(self, predict: NoisePrediction, x0: Tensor, k: int | None,
                             generator: torch.Generator, batch: int | None = None) -> Tensor:
        """The variational lower bound on log p(x_0) per image, in nats, float64 (Ho et al. 2020, eq. 5):

            -log p(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0,   L_0 = -log p(x_0 | x_1).

        L_T is exact, L_0 one network call. The T - 1 KL terms are all evaluated when ``k`` is
        None or at least T - 1; else k distinct steps are drawn uniformly per image, without
        replacement, and their sum scaled by (T - 1) / k: an unbiased estimate of the whole sum
        (each step is drawn with probability k / (T - 1)), exact at k = T - 1. Each term draws
        its own x_t from ``generator``. Terms go through the network together, up to ``batch``
        images a call (default: one term a call); the draws do not depend on how many.
        """
        n, steps = len(x0), self.timesteps - 1
        device = x0.device
        if k is None or k >= steps:
            k, chosen = steps, torch.arange(2, self.timesteps + 1, device=device).expand(n, steps)
        else:
            chosen = torch.rand(n, steps, generator=generator, device=device).argsort(dim=1)[:, :k] + 2  # N x k

        def noise() -> Tensor:
            return torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)

        bound = self.prior_kl(x0) + self.decoder_nll(predict, x0, noise())
        group = max(1, (batch or n) // n)  # terms per network call
        kl = torch.zeros(n, dtype=torch.float64, device=device)
        for start in range(0, k, group):
            t = chosen[:, start:start + group].T  # G x N
            eps = torch.cat([noise() for _ in range(len(t))])  # G*N x C x H x W
            x = x0.repeat(len(t), *([1] * (x0.dim() - 1)))
            kl = kl + self.kl_term(predict, x, t.reshape(-1), eps).view(len(t), n).sum(0)
        return -(bound + kl * (steps / k))
