"""Small data sets for the demo, generated in code from a fixed seed (no download, identical on every machine).

``city_profit()`` is in the spirit of the classic first exercise of machine learning courses: the population of
a city (in 10,000s) against the profit a food truck makes there (in $10,000s). ``exam_scores()`` gives two exam
scores per applicant and whether the applicant was admitted, for a two-class classifier.

The numbers come from a SplitMix64 generator written here rather than NumPy's, whose streams may change between
releases; values are rounded to 4 decimals so that last-bit differences between C math libraries cannot show.

>>> data = city_profit()
>>> data.population.shape, data.profit.shape
((97,), (97,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CityProfit", "ExamScores", "city_profit", "exam_scores"]

_MASK64 = (1 << 64) - 1


class _SplitMix64:
    """A tiny 64-bit generator with a fully specified output sequence, so the data never depend on a library."""

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1) with 53 random bits."""
        return (self.next_u64() >> 11) * 2.0**-53

    def normal(self) -> float:
        """A standard normal draw (Box-Muller; 1 - u keeps the logarithm's argument in (0, 1])."""
        radius = math.sqrt(-2.0 * math.log(1.0 - self.uniform()))
        return radius * math.cos(2.0 * math.pi * self.uniform())


@dataclass(frozen=True)
class CityProfit:
    """Population of each city in 10,000s and the profit made there in $10,000s (negative: a loss)."""

    population: np.ndarray
    profit: np.ndarray


@dataclass(frozen=True)
class ExamScores:
    """Two exam scores (0-100) per applicant, shape (n, 2), and admitted (1.0) or not (0.0), shape (n,)."""

    scores: np.ndarray
    admitted: np.ndarray


def city_profit(n: int = 97, seed: int = 20111) -> CityProfit:
    """``n`` cities: most are small (5-8 in 10,000s), a few large (up to 22.5); profit grows about linearly.

    Profit is ``1.2 * population - 3.9`` plus noise of standard deviation 2.8, so a straight line explains most,
    but not all, of it.
    """
    if n < 2:
        raise ValueError(f"city_profit(): n must be at least 2 to fit a line, got {n}")
    rng = _SplitMix64(seed)
    population = []
    profit = []
    for _ in range(n):
        # u**2.5 piles the cities up at the small end, as real city sizes do.
        people = 5.0 + 17.5 * rng.uniform() ** 2.5
        population.append(round(people, 4))
        profit.append(round(1.2 * people - 3.9 + 2.8 * rng.normal(), 4))
    return CityProfit(np.array(population), np.array(profit))


def exam_scores(n: int = 100, seed: int = 20112) -> ExamScores:
    """``n`` applicants with two scores in [30, 100); the better the sum, the likelier the admission.

    Admission is drawn with probability ``sigmoid(0.15 * (score1 + score2 - 130))``, so the classes overlap a
    little (a logistic model then has a finite best fit) and the best boundary is near score1 + score2 = 130.
    """
    if n < 2:
        raise ValueError(f"exam_scores(): n must be at least 2, got {n}")
    rng = _SplitMix64(seed)
    scores = []
    admitted = []
    for _ in range(n):
        first = round(30.0 + 70.0 * rng.uniform(), 4)
        second = round(30.0 + 70.0 * rng.uniform(), 4)
        chance = 1.0 / (1.0 + math.exp(-0.15 * (first + second - 130.0)))
        scores.append((first, second))
        admitted.append(1.0 if rng.uniform() < chance else 0.0)
    return ExamScores(np.array(scores), np.array(admitted))
