"""MoreMNAS reinforced mutation: a learned policy proposes mutations, mixed with random ones.

MoreMNAS (papers.md section 5.1) mixes "reinforced control" with the natural mutation of NSGA-II
to regulate arbitrary mutation and "prevent the searched models from degrading". Its controller,
reward and roulette are not published; this is our design, kept small and explicit:

* **Policy**: one categorical distribution per layer over that layer's allowed choices, with
  logits ``theta[l, c]`` (0 at start: uniform, i.e. the same as random mutation). A mutated gene
  moves to another allowed choice ``c != current`` with probability ``softmax(theta[l])``
  restricted to those choices (drawn with the Gumbel-max trick, vectorised per layer).
* **Reward** ("improvement"): 1 if the offspring survives into the next population, else 0.
  Surviving NSGA-II selection means the child is non-dominated enough (or feasible enough) to
  displace a member of the population: it is exactly the improvement the search optimises, it
  is scale-free across objectives and constraints, and it needs no extra evaluation. A child that
  duplicates an archived genome still gets its reward (its objectives come from the archive).
* **Update**: REINFORCE with a baseline. For every mutated gene ``(l, a)`` of a child with reward
  ``r``: ``theta[l] += lr * (r - b) * (onehot(a) - p)``, ``p`` the restricted distribution it was
  drawn from, averaged over the generation's mutated genes; ``b`` is an exponential moving
  average of the rewards (``baseline_decay``), which keeps the update centred.
* **Roulette**: each offspring is mutated by the policy with probability ``share`` and by random
  mutation otherwise; MoreMNAS does not publish the split, our default is 0.5.

The state (logits, baseline) is plain data, saved in the search checkpoint; all randomness comes
from the engine's generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastscarlet.search.operators import SpaceTables


class ReinforcedMutation:
    """The per-layer categorical policy; :meth:`mutate` proposes, :meth:`update` learns."""

    def __init__(
        self,
        tables: SpaceTables,
        lr: float = 0.5,
        baseline_decay: float = 0.9,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"controller lr must be > 0, got {lr}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        self.tables = tables
        self.lr, self.baseline_decay = float(lr), float(baseline_decay)
        self.logits = np.zeros((tables.num_layers, tables.space.num_choices))
        self.baseline: float | None = None
        # what the last mutate() did, per layer: (child rows, chosen positions, probabilities)
        self._pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def _restricted(self, layer: int, current: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, k]`` over ``allowed[layer]`` for genes at ``current`` positions:
        ``softmax(theta[l])`` with the current choice removed."""
        z = np.tile(self.logits[layer, self.tables.allowed[layer]], (len(current), 1))
        z[np.arange(len(current)), current] = -np.inf
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def mutate(
        self, pop: np.ndarray, mask: np.ndarray, rows: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Mutate the masked genes of ``pop[rows]`` with the policy; remembers them for update.

        Draws by the Gumbel-max trick, layer by layer: reproducible for a given generator state.
        """
        out = pop.copy()
        self._pending = []
        sub = np.zeros_like(mask)
        sub[rows] = mask[rows]
        for layer in np.flatnonzero(sub.any(axis=0)).tolist():
            r = np.flatnonzero(sub[:, layer])
            current = self.tables.position[layer, pop[r, layer]]
            p = self._restricted(layer, current)
            with np.errstate(divide="ignore"):
                pick = np.argmax(np.log(p) + rng.gumbel(size=p.shape), axis=1)
            out[r, layer] = self.tables.allowed[layer][pick]
            self._pending.append((layer, r, pick, p))
        return out

    def take_pending(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """What the last :meth:`mutate` did (for :meth:`update_attempts`), and forget it."""
        pending, self._pending = self._pending, []
        return pending

    def update(self, rewards: np.ndarray) -> float | None:
        """Learn from ``rewards[child row]`` of the last :meth:`mutate`; returns the mean reward
        of the policy's children (None if it mutated none)."""
        return self.update_attempts([(self.take_pending(), rewards)])

    def update_attempts(
        self,
        attempts: list[tuple[list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], np.ndarray]],
    ) -> float | None:
        """One REINFORCE step from several :meth:`mutate` calls: ``(pending, rewards)`` pairs, the
        rewards indexed by the rows of that call. Returns the mean reward of the policy's children
        (None if it mutated none)."""
        per_child = [
            rewards[np.unique(np.concatenate([r for _, r, _, _ in pending]))]
            for pending, rewards in attempts
            if pending
        ]
        if not per_child:
            return None
        mean_r = float(np.mean(np.concatenate(per_child)))
        base = mean_r if self.baseline is None else self.baseline
        grad = np.zeros_like(self.logits)
        genes = 0
        for pending, rewards in attempts:
            for layer, r, pick, p in pending:
                g = -p
                g[np.arange(len(r)), pick] += 1.0
                adv = rewards[r].astype(np.float64) - base
                grad[layer, self.tables.allowed[layer]] += (adv[:, None] * g).sum(axis=0)
                genes += len(r)
        self.logits += self.lr * grad / genes
        d = self.baseline_decay
        self.baseline = mean_r if self.baseline is None else d * self.baseline + (1 - d) * mean_r
        return mean_r

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.tolist(), "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        logits = np.asarray(state["logits"], dtype=np.float64)
        if logits.shape != self.logits.shape:
            raise ValueError(
                f"controller state has logits of shape {logits.shape}, expected "
                f"{self.logits.shape} for this space"
            )
        self.logits = logits
        self.baseline = state["baseline"]
