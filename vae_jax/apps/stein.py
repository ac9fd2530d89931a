"""Stein's unbiased risk estimate: a denoiser's mean squared error without the clean image, and
the linear blend of several denoisers that minimises it.

For y = x + sigma * e, e ~ N(0, I) of N components, and f weakly differentiable, Stein's (1981)
lemma gives E ||f(y) - x||^2 = E [||y - f(y)||^2 - N sigma^2 + 2 sigma^2 div f(y)]. The divergence
of a black-box f is estimated by one more run on a perturbed input (Ramani, Blu & Unser 2008,
"Monte-Carlo SURE"): div f(y) ~ b . (f(y + eps b) - f(y)) / eps with b ~ N(0, I), unbiased as eps
-> 0 and, for N in the hundreds of thousands, with a spread far below the risk's.

A blend f_w = sum_k w_k f_k has div f_w = sum_k w_k div f_k, so its risk is a quadratic in w
(F the candidates as columns, d their divergences); ``least_risk_blend`` minimises it over convex
weights (or, unconstrained, solves F^T F w = F^T y - sigma^2 d), in the spirit of SURE-LET
(Luisier, Blu & Unser 2007), which builds a denoiser as the SURE-optimal linear combination of
elementary ones.

Arrays are any shape (flattened inside); ``sigma`` in their units.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def probe(key, shape):
    """b ~ N(0, I) of ``shape``: the direction of the perturbed run."""
    return jax.random.normal(key, shape)


def divergence(estimate, perturbed_estimate, direction, epsilon):
    """div f(y) ~ b . (f(y + eps b) - f(y)) / eps."""
    return jnp.vdot(direction, perturbed_estimate - estimate) / epsilon


def risk(noisy, estimate, perturbed_estimate, direction, epsilon, sigma):
    """Monte-Carlo SURE per component, (||y - f(y)||^2 - N sigma^2 + 2 sigma^2 div f(y)) / N, with
    ``perturbed_estimate`` = f(y + eps b); its expectation is E ||f(y) - x||^2 / N."""
    size = jnp.size(noisy)
    residual = jnp.sum(jnp.square(noisy - estimate))
    stein_term = 2 * sigma**2 * divergence(estimate, perturbed_estimate, direction, epsilon)
    return (residual - size * sigma**2 + stein_term) / size


class Blend(NamedTuple):
    """``estimate`` sum_k w_k f_k(y) and ``perturbed_estimate`` sum_k w_k f_k(y + eps b) (float64
    NumPy, the shape of y); ``weights`` w (K,); ``risk`` the blend's SURE per component; ``risks``
    each candidate's own."""

    estimate: np.ndarray
    perturbed_estimate: np.ndarray
    weights: np.ndarray
    risk: float
    risks: np.ndarray


def _simplex_quadratic_minimum(gram, linear):
    """argmin over w >= 0, sum w = 1 of w^T G w - 2 w^T c, by every support set's KKT system (K is a few)."""
    size = len(linear)
    best, best_value = None, np.inf
    for support in itertools.chain.from_iterable(itertools.combinations(range(size), k) for k in range(1, size + 1)):
        index = list(support)
        kkt = np.zeros((len(index) + 1, len(index) + 1))
        kkt[:-1, :-1], kkt[:-1, -1], kkt[-1, :-1] = 2 * gram[np.ix_(index, index)], 1.0, 1.0
        solution = np.linalg.lstsq(kkt, np.append(2 * linear[index], 1.0), rcond=None)[0][:-1]
        if np.any(solution < -1e-12):
            continue
        weights = np.zeros(size)
        weights[index] = np.clip(solution, 0.0, None)
        weights /= weights.sum()
        value = weights @ gram @ weights - 2 * weights @ linear
        if value < best_value:
            best, best_value = weights, value
    return best


def least_risk_blend(noisy, estimates, perturbed_estimates, direction, epsilon, sigma, *, convex=True) -> Blend:
    """argmin_w SURE(sum_k w_k f_k) over the K ``estimates`` f_k(y) and their ``perturbed_estimates``
    f_k(y + eps b). SURE(w) = w^T F^T F w - 2 w^T (F^T y - sigma^2 d) + ||y||^2 - N sigma^2, d_k =
    div f_k(y). ``convex``: w on the simplex (w >= 0, sum w = 1), so the blend stays within the
    candidates' hull and a wrong divergence estimate can do no worse than pick the worst of them;
    False: unconstrained, w = (F^T F)^-1 (F^T y - sigma^2 d) (least-norm where singular)."""
    # The candidates are nearly collinear (each close to x): the K x K systems are solved in float64.
    columns = np.stack([np.ravel(np.asarray(e, np.float64)) for e in estimates], axis=1)
    perturbed = np.stack([np.ravel(np.asarray(e, np.float64)) for e in perturbed_estimates], axis=1)
    flat_noisy, flat_direction = np.ravel(np.asarray(noisy, np.float64)), np.ravel(np.asarray(direction, np.float64))
    divergences = flat_direction @ (perturbed - columns) / epsilon
    gram, linear = columns.T @ columns, columns.T @ flat_noisy - sigma**2 * divergences
    if convex:
        weights = _simplex_quadratic_minimum(gram, linear)
    else:
        weights = np.linalg.lstsq(gram, linear, rcond=None)[0]
    estimate, perturbed_estimate = columns @ weights, perturbed @ weights

    def sure(e, p):
        return float(risk(flat_noisy, e, p, flat_direction, epsilon, sigma))

    own = np.array([sure(columns[:, k], perturbed[:, k]) for k in range(columns.shape[1])])
    shape = np.shape(noisy)
    return Blend(estimate.reshape(shape), perturbed_estimate.reshape(shape), weights, sure(estimate, perturbed_estimate), own)
