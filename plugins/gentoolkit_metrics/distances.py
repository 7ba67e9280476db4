"""Distances between two sets of feature vectors (real and generated), in float64 torch.

No scipy: the one matrix square root the Frechet distance needs comes from
symmetric eigen-decompositions, and the k-NN searches run in row chunks so
memory stays bounded for any number of images.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROWS = 1024  # distance-matrix rows computed at once by the k-NN searches


def psd_sqrt(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix; rounding's tiny
    negative eigenvalues are clipped to 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to two feature sets
    (Heusel et al. 2017), with unbiased covariances as in the reference implementation.

    S_a S_b is not symmetric, but it is similar to S_a^1/2 S_b S_a^1/2, which is symmetric PSD,
    so tr((S_a S_b)^1/2) is the sum of the square roots of that matrix's eigenvalues.
    """
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = psd_sqrt(cov_a)
    inner = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return (mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root).item()


def kernel_distance(a: Tensor, b: Tensor, generator: torch.Generator, subsets: int = 100,
                    subset_size: int = 1000) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 between the feature
    sets under the kernel k(x, y) = (x.y / d + 1)^3, averaged over ``subsets`` random subsets of
    ``subset_size`` each (so kernel matrices stay small); returns the mean and its spread (std)."""
    a, b = a.double(), b.double()
    m = min(subset_size, len(a), len(b))
    dims = a.shape[1]
    estimates = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator, device=generator.device)[:m].to(a.device)]
        y = b[torch.randperm(len(b), generator=generator, device=generator.device)[:m].to(b.device)]
        k_xx, k_yy, k_xy = ((p @ q.T / dims + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))  # i != j only
        estimates.append(within - 2 * k_xy.mean())
    values = torch.stack(estimates)
    return values.mean().item(), (values.std().item() if subsets > 1 else 0.0)


def knn_radii(points: Tensor, k: int) -> Tensor:
    """Each point's distance to its k-th nearest neighbour among the others."""
    return torch.cat([torch.cdist(points[i:i + ROWS], points).kthvalue(k + 1, dim=1).values  # +1: itself
                      for i in range(0, len(points), ROWS)])


def coverage(queries: Tensor, points: Tensor, radii: Tensor) -> float:
    """The fraction of queries inside at least one ball around ``points`` with the given radii."""
    inside = [(torch.cdist(queries[i:i + ROWS], points) <= radii).any(1) for i in range(0, len(queries), ROWS)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the fraction of
    generated samples inside the real manifold (the union of balls reaching each real sample's
    k-th nearest real neighbour), recall the fraction of real samples inside the generated one."""
    real, fake = real.double(), fake.double()
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))
