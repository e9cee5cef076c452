"""SVM fitness surrogate: an SVR ranks offspring, an SVC flags likely failures; refit as results arrive."""
from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Optional

import numpy as np
from scipy.stats import spearmanr
from sklearn.svm import SVC, SVR


class _Kernel:
    """A fitted RBF support-vector machine evaluated with numpy: standardise, then the kernel expansion
    sum_i dual_i * exp(-gamma |x - sv_i|^2) + intercept (what libsvm computes, without sklearn's per-call checks)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, gamma: float, machine):
        self.mean, self.scale, self.gamma = mean, scale, gamma
        self.sv = machine.support_vectors_
        self.sv_sq = np.einsum("ij,ij->i", self.sv, self.sv)
        self.dual, self.intercept = machine.dual_coef_[0], float(machine.intercept_[0])

    def decision(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        d2 = np.einsum("ij,ij->i", z, z)[:, None] + self.sv_sq[None, :] - 2.0 * (z @ self.sv.T)
        return np.exp(-self.gamma * d2) @ self.dual + self.intercept


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(scaled x, mean, scale, gamma): StandardScaler's scaling (constant columns kept at scale 1) and
    sklearn's gamma='scale' of the scaled data."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    z = (x - mean) / scale
    var = z.var()
    return z, mean, scale, 1.0 / (z.shape[1] * var) if var > 0 else 1.0


def curve_features(fitness: float, curve) -> np.ndarray:
    """What a first-rung result says of how a candidate learns: its fitness, the log of its last training loss,
    and how far the training loss fell along the rung (last over first)."""
    losses = [point["train_loss"] for point in curve] or [float("nan")]
    last = losses[-1] if np.isfinite(losses[-1]) else 1.0
    fall = last / losses[0] if len(losses) > 1 and np.isfinite(losses[0]) and losses[0] > 0 else 1.0
    return np.array([fitness, np.log(max(last, 1e-12)), fall], dtype=np.float64)


class Surrogate:
    """Learns fitness from genome features. Its training set is capped, so its cost per result is bounded.

    The SVR is fitted on fitness ranks (robust to the huge errors of broken networks); predictions are mapped back
    to fitness units through the training fitness quantiles. Each result is predicted on arrival, by the model of
    the time (out of sample); each refit's log row scores the last `window` such predictions (Spearman), since the
    few results between two refits make a score that swings from -1 to 1.
    """

    def __init__(self, higher_is_better: bool, *, min_results: int = 8, max_train: int = 256,
                 refit_every: int = 4, window: int = 32):
        self.sign = 1.0 if higher_is_better else -1.0  # internal scores: higher is better
        self.min_results, self.max_train, self.refit_every = min_results, max_train, refit_every
        self.x: list[np.ndarray] = []
        self.fitness: list[Optional[float]] = []
        self.n_ok = 0
        self._best: list[tuple[float, int]] = []  # min-heap (score, -index) of the best max_train // 2 successes
        self.regressor: Optional[SVR] = None
        self.classifier: Optional[SVC] = None
        self._fitness_model: Optional[_Kernel] = None
        self._failure_model: Optional[_Kernel] = None
        self.y_sorted = np.empty(0)
        self.since_refit = 0
        self.log: list[dict] = []
        self._scored: deque[tuple[float, float]] = deque(maxlen=window)  # (predicted on arrival, actual)

    @property
    def ready(self) -> bool:
        return self.regressor is not None

    @property
    def due(self) -> bool:
        """Enough results for a first fit, or `refit_every` new ones since the last."""
        return self.n_ok >= self.min_results and (not self.ready or self.since_refit >= self.refit_every)

    def observe(self, features: np.ndarray, fitness: Optional[float], refit: bool = True) -> Optional[dict]:
        """Record one result (fitness None = failed); refit when due, unless `refit` is False (the caller refits
        later, or is replaying a history). Returns the log row of a refit if one was closed."""
        index = len(self.x)
        x = np.asarray(features, dtype=np.float64)
        if self.ready and fitness is not None:
            self._scored.append((float(self.predict(x)[0][0]), fitness))
        self.x.append(x)
        self.fitness.append(fitness)
        if fitness is not None:
            self.n_ok += 1
            entry = (self.sign * fitness, -index)  # on equal scores the earlier result ranks first
            if len(self._best) < self.max_train // 2:
                heapq.heappush(self._best, entry)
            elif entry > self._best[0]:
                heapq.heapreplace(self._best, entry)
        self.since_refit += 1
        return self.refit() if refit and self.due else None

    def _training_rows(self) -> np.ndarray:
        """All rows, or when over the cap: the best half and the most recent half (O(max_train), whatever the
        length of the history)."""
        n = len(self.x)
        if n <= self.max_train:
            return np.arange(n)
        chosen = {-negative for _, negative in self._best}
        i = n - 1
        while len(chosen) < self.max_train:
            chosen.add(i)
            i -= 1
        return np.array(sorted(chosen))

    def refit(self) -> Optional[dict]:
        closed = self.close_log()  # score the outgoing model before it is replaced
        start = time.perf_counter()
        rows = self._training_rows()
        x = np.stack([self.x[i] for i in rows])
        failed = np.array([self.fitness[i] is None for i in rows])
        y = np.array([self.fitness[i] for i in rows if self.fitness[i] is not None], dtype=np.float64)
        ranks = np.argsort(np.argsort(self.sign * y)) / max(len(y) - 1, 1)
        z, mean, scale, gamma = _standardise(x[~failed])
        self.regressor = SVR(C=1.0, epsilon=0.02, gamma=gamma).fit(z, ranks)
        self._fitness_model = _Kernel(mean, scale, gamma, self.regressor)
        self.y_sorted = np.sort(self.sign * y)
        self.classifier = self._failure_model = None
        if failed.sum() >= 2 and (~failed).sum() >= 2:
            z, mean, scale, gamma = _standardise(x)
            self.classifier = SVC(class_weight="balanced", gamma=gamma).fit(z, failed)
            self._failure_model = _Kernel(mean, scale, gamma, self.classifier)
        self.log.append({"refit": len(self.log) + 1, "n_results": len(self.x), "n_train": len(rows),
                         "fit_seconds": time.perf_counter() - start, "spearman": None, "n_scored": 0})
        self.since_refit = 0
        return closed

    def restart(self) -> None:
        """After replaying a stored history: fit once, and start the log afresh (replays are not measurements)."""
        if self.n_ok >= self.min_results:
            self.refit()
        self.log.clear()
        self._scored.clear()

    def close_log(self) -> Optional[dict]:
        """Score the predictions of the last `window` results, each made on arrival; return the current refit's
        log row with that score (None if there is no row)."""
        if not self.log:
            return None
        row = self.log[-1]
        row["n_scored"] = len(self._scored)
        if len(self._scored) >= 3:
            pred, actual = (np.array(v) for v in zip(*self._scored))
            if np.ptp(pred) > 0 and np.ptp(actual) > 0:  # else undefined (and scipy warns on every refit)
                rho = spearmanr(pred, actual).statistic
                row["spearman"] = None if np.isnan(rho) else float(rho)
        return row

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted fitness, likely to fail) for rows of features."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        rank = np.clip(self._fitness_model.decision(x), 0.0, 1.0)
        n = len(self.y_sorted)  # the quantiles of the training fitness (np.quantile's linear rule, faster)
        fitness = self.sign * np.interp(rank * (n - 1), np.arange(n), self.y_sorted)
        if self._failure_model is None:
            return fitness, np.zeros(len(x), bool)
        return fitness, self._failure_model.decision(x) > 0  # the positive side is classes_[1], True: fails

    def choose(self, x: np.ndarray) -> tuple[int, float]:
        """Index of the most promising row (likely failures last) and its predicted fitness."""
        fitness, fails = self.predict(x)
        score = self.sign * fitness - 1e9 * fails
        best = int(np.argmax(score))
        return best, float(fitness[best])
