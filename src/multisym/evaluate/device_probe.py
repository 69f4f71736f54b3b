"""The linear probe's fit with its objective evaluated on a GPU (``probe.device: cuda``).

The same problem, solver and stopping rule as scikit-learn's
``LogisticRegression(solver="lbfgs")``, which ``multisym.evaluate.probe`` runs on the
CPU: scipy's L-BFGS-B on the host minimises, over the weights W and bias b,

    f(W, b) = (1/n) Σ_i CE(W x_i + b, y_i) + ‖W‖² / (2 C n)

(scikit-learn's C · Σ CE + ½ ‖W‖² divided by C · n), with the options
scikit-learn passes (``maxiter`` = max_iter, ``gtol`` = tol, ``maxls`` = 50,
``ftol`` = 64 ε). Only f and its gradient move to the device, in float64:
with Z = X Wᵀ + b and P = softmax(Z), ∇_W f = (P − Y)ᵀ X / n + W / (C n) and
∇_b f = Σ_i (P − Y)_i / n, two products of the (n, d) features with an
(n, K) matrix, the whole cost of an iteration. The host sends W and gets
the gradient back, K · (d + 1) values each way. As scikit-learn does, only
the classes present in the training labels are fitted, and two classes are
fitted as one logistic regression, CE(z, y) = log(1 + e^z) − y z.

The features are standardised on the host first (``multisym.evaluate.probe``), so
both paths fit the same numbers; their solutions differ by rounding along
the way, within the stopping tolerance. The device holds X, Z and P in
float64: about 10 GB for iNat-2019 at paper scale (212k x 2,048, 1,010
classes).

scikit-learn's own array-API dispatch would take torch tensors too, but it
needs ``SCIPY_ARRAY_API=1`` before scipy is first imported, which would
change scipy for every job of a warm-start server (it preloads scipy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_SEARCH_STEPS = 50  # scikit-learn's maxls for lbfgs (scipy's default is 20)


@dataclass
class DeviceFit:
    """A fit in scikit-learn's attribute names, which ``probe_parameters`` reads."""

    coef_: np.ndarray  # (K, d), or (1, d) for two classes
    intercept_: np.ndarray
    classes_: np.ndarray
    n_iter_: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        decision = x @ self.coef_.T + self.intercept_
        if len(self.classes_) == 2:
            return self.classes_[(decision[:, 0] > 0).astype(int)]
        return self.classes_[decision.argmax(axis=1)]


def cuda_device():
    """The job's GPU, or an error saying what to do when it has none."""
    import torch

    from multisym.errors import UserError

    if not torch.cuda.is_available():
        raise UserError("probe.device is cuda but this job sees no GPU (torch.cuda.is_available() is False): "
                        "run it where a GPU is visible (on SLURM the probe rules then ask for one), "
                        "or set probe.device: cpu")
    return torch.device("cuda")


class DeviceObjective:
    """f and ∇f above for one training set held on ``device``; ``C`` is set per fit."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device):
        import torch

        self.classes, encoded = np.unique(y, return_inverse=True)
        self.x = torch.as_tensor(x, dtype=torch.float64, device=device)
        labels = torch.as_tensor(encoded, device=device)[:, None]
        self.binary = len(self.classes) == 2
        self.rows = 1 if self.binary else len(self.classes)
        # (n, 1) columns, not an (n, K) one-hot: Z and P are the fit's only (n, K) arrays
        self.labels = labels.to(torch.float64) if self.binary else labels
        self.minus_one = torch.full(labels.shape, -1.0, dtype=torch.float64, device=device)
        self.n, self.dims = x.shape
        self.C = 1.0

    def __call__(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        import torch

        n = self.n
        params = torch.as_tensor(w.reshape(self.rows, self.dims + 1), device=self.x.device)
        weight, bias = params[:, :-1], params[:, -1]
        z = torch.addmm(bias, self.x, weight.T)
        if self.binary:
            losses = torch.nn.functional.softplus(z) - self.labels * z
            residual = torch.sigmoid(z) - self.labels
        else:
            losses = torch.logsumexp(z, dim=1, keepdim=True) - z.gather(1, self.labels)
            residual = torch.softmax(z, dim=1).scatter_add_(1, self.labels, self.minus_one)  # P − Y
        penalty = 1.0 / (self.C * n)
        loss = losses.sum() / n + 0.5 * penalty * (weight * weight).sum()
        grad = torch.empty_like(params)
        torch.addmm(weight, residual.T, self.x, beta=penalty, alpha=1.0 / n, out=grad[:, :-1])
        grad[:, -1] = residual.sum(dim=0) / n
        return float(loss), grad.cpu().numpy().ravel()


def fit(objective: DeviceObjective, C: float, max_iter: int, tol: float) -> DeviceFit:
    """One fit from zero weights, as scikit-learn starts each C."""
    from scipy.optimize import minimize

    objective.C = C
    start = np.zeros(objective.rows * (objective.dims + 1))
    result = minimize(objective, start, method="L-BFGS-B", jac=True,
                      options={"maxiter": max_iter, "gtol": tol, "maxls": LINE_SEARCH_STEPS,
                               "ftol": 64 * np.finfo(float).eps})
    params = result.x.reshape(objective.rows, objective.dims + 1)
    return DeviceFit(params[:, :-1].copy(), params[:, -1].copy(), objective.classes, np.array([result.nit]))
