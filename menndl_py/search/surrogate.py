"""SVM fitness surrogate: an SVR ranks offspring, an SVC flags likely failures; refit as results arrive."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
from scipy.stats import spearmanr
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR


class Surrogate:
    """Learns fitness from genome features. Its training set is capped, so its cost per result is bounded.

    The SVR is fitted on fitness ranks (robust to the huge errors of broken networks); predictions are mapped back
    to fitness units through the training fitness quantiles. Each refit is scored by the Spearman correlation of
    its predictions with the results that arrive before the next refit (out of sample).
    """

    def __init__(self, higher_is_better: bool, *, min_results: int = 8, max_train: int = 256,
                 refit_every: int = 4):
        self.sign = 1.0 if higher_is_better else -1.0  # internal scores: higher is better
        self.min_results, self.max_train, self.refit_every = min_results, max_train, refit_every
        self.x: list[np.ndarray] = []
        self.fitness: list[Optional[float]] = []
        self.regressor = self.classifier = None
        self.y_sorted = np.empty(0)
        self.since_refit = 0
        self.log: list[dict] = []
        self._scored: list[tuple[float, float]] = []

    @property
    def ready(self) -> bool:
        return self.regressor is not None

    def observe(self, features: np.ndarray, fitness: Optional[float], refit: bool = True) -> Optional[dict]:
        """Record one result (fitness None = failed). Returns the log row of a refit if one was closed."""
        if self.ready and fitness is not None:
            self._scored.append((len(self.x), fitness))  # predicted in one batch when this refit's log closes
        self.x.append(np.asarray(features, dtype=np.float64))
        self.fitness.append(fitness)
        self.since_refit += 1
        n_ok = sum(f is not None for f in self.fitness)
        if refit and n_ok >= self.min_results and (not self.ready or self.since_refit >= self.refit_every):
            return self.refit()
        return None

    def _training_rows(self) -> np.ndarray:
        """All rows, or when over the cap: the best half and the most recent half."""
        n = len(self.x)
        if n <= self.max_train:
            return np.arange(n)
        ok = [i for i, f in enumerate(self.fitness) if f is not None]
        chosen = set(sorted(ok, key=lambda i: -self.sign * self.fitness[i])[: self.max_train // 2])
        for i in range(n - 1, -1, -1):
            if len(chosen) >= self.max_train:
                break
            chosen.add(i)
        return np.array(sorted(chosen))

    def refit(self) -> Optional[dict]:
        closed = self.close_log()  # score the outgoing model before it is replaced
        start = time.perf_counter()
        rows = self._training_rows()
        x = np.stack([self.x[i] for i in rows])
        failed = np.array([self.fitness[i] is None for i in rows])
        y = np.array([self.fitness[i] for i in rows if self.fitness[i] is not None], dtype=np.float64)
        ranks = np.argsort(np.argsort(self.sign * y)) / max(len(y) - 1, 1)
        self.regressor = make_pipeline(StandardScaler(), SVR(C=1.0, epsilon=0.02)).fit(x[~failed], ranks)
        self.y_sorted = np.sort(self.sign * y)
        self.classifier = None
        if failed.sum() >= 2 and (~failed).sum() >= 2:
            self.classifier = make_pipeline(StandardScaler(), SVC(class_weight="balanced")).fit(x, failed)
        self.log.append({"refit": len(self.log) + 1, "n_results": len(self.x), "n_train": len(rows),
                         "fit_seconds": time.perf_counter() - start, "spearman": None, "n_scored": 0})
        self.since_refit = 0
        return closed

    def restart(self) -> None:
        """After replaying a stored history: fit once, and start the log afresh (replays are not measurements)."""
        if sum(f is not None for f in self.fitness) >= self.min_results:
            self.refit()
        self.log.clear()
        self._scored = []

    def close_log(self) -> Optional[dict]:
        """Score the current refit on the results seen since it; return its log row (None if there is none)."""
        if not self.log:
            return None
        row = self.log[-1]
        row["n_scored"] = len(self._scored)
        if len(self._scored) >= 3:
            rows, actual = (np.array(v) for v in zip(*self._scored))
            pred = self.predict(np.stack([self.x[i] for i in rows]))[0]
            if np.ptp(pred) > 0 and np.ptp(actual) > 0:  # else undefined (and scipy warns on every refit)
                rho = spearmanr(pred, actual).statistic
                row["spearman"] = None if np.isnan(rho) else float(rho)
        self._scored = []
        return row

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted fitness, likely to fail) for rows of features."""
        rank = np.clip(self.regressor.predict(x), 0.0, 1.0)
        fitness = self.sign * np.quantile(self.y_sorted, rank)
        fails = self.classifier.predict(x).astype(bool) if self.classifier is not None else np.zeros(len(x), bool)
        return fitness, fails

    def choose(self, x: np.ndarray) -> tuple[int, float]:
        """Index of the most promising row (likely failures last) and its predicted fitness."""
        fitness, fails = self.predict(x)
        score = self.sign * fitness - 1e9 * fails
        best = int(np.argmax(score))
        return best, float(fitness[best])
