"""How far a quantized model's next-token distributions are from the original's, as llama.cpp reports it.

``llama-perplexity --kl-divergence`` (tools/perplexity/perplexity.cpp) compares a quantized model Q
with a base model on the same tokens and prints, over every scored token:

* **PPL(Q) / PPL(base)** = exp(mean NLL_Q - mean NLL_base), the perplexity ratio;
* **mean KLD** = the mean over tokens of KL(p_base || p_Q) = sum_v p_base(v) (log p_base(v) - log p_Q(v));
* **same top p** = the fraction of tokens where both models' most likely next token is the same;

each with its statistical uncertainty (the standard error of the mean over tokens; for the ratio,
with the covariance of the two NLLs, which are strongly correlated). ``Agreement`` accumulates the
same sums batch by batch. One difference: llama.cpp stores the base log-probabilities in 16 bits and
skips those below -16 when summing the KL divergence; here it is computed exactly, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["Agreement"]

_CHUNK = 256


def _mean_and_error(total: float, squares: float, n: int) -> tuple[float, float]:
    mean = total / n
    var = max(squares / n - mean * mean, 0.0)
    return mean, math.sqrt(var / max(n - 1, 1))


@dataclass
class Agreement:
    """Running sums over scored tokens of a base and a quantized model (see the module docstring)."""
    sums: dict = field(default_factory=lambda: dict.fromkeys(
        ("nll", "nll2", "nll_base", "nll_base2", "nll_cross", "kld", "kld2", "same_top", "count"), 0.0))

    @torch.no_grad()
    def add(self, base_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
            keep: torch.Tensor = None) -> "Agreement":
        """Add the tokens of one batch: logits (..., vocab) of both models, ``targets`` (...) the next
        tokens, ``keep`` (...) bool: which positions are scored (default: all). Returns self."""
        if base_logits.shape != logits.shape or base_logits.shape[:-1] != targets.shape:
            raise ValueError(f"logits {tuple(base_logits.shape)} / {tuple(logits.shape)} and targets "
                             f"{tuple(targets.shape)} do not match")
        keep = torch.ones_like(targets, dtype=torch.bool) if keep is None else keep
        base_rows, rows, t_all = base_logits[keep], logits[keep], targets[keep]
        for r0 in range(0, t_all.numel(), _CHUNK):                      # float64, a few hundred rows at a time
            self._add_rows(base_rows[r0:r0 + _CHUNK], rows[r0:r0 + _CHUNK], t_all[r0:r0 + _CHUNK])
        return self

    def _add_rows(self, base_logits: torch.Tensor, logits: torch.Tensor, t: torch.Tensor) -> None:
        lp_base = torch.log_softmax(base_logits.double(), dim=-1)        # (n, vocab)
        lp = torch.log_softmax(logits.double(), dim=-1)
        nll_base = -lp_base.gather(1, t[:, None]).squeeze(1)
        nll = -lp.gather(1, t[:, None]).squeeze(1)
        kld = (lp_base.exp() * (lp_base - lp)).sum(dim=1)
        s = self.sums
        s["nll"] += float(nll.sum())
        s["nll2"] += float((nll * nll).sum())
        s["nll_base"] += float(nll_base.sum())
        s["nll_base2"] += float((nll_base * nll_base).sum())
        s["nll_cross"] += float((nll * nll_base).sum())
        s["kld"] += float(kld.sum())
        s["kld2"] += float((kld * kld).sum())
        s["same_top"] += float((lp.argmax(1) == lp_base.argmax(1)).sum())
        s["count"] += int(t.numel())

    def summary(self, decimals: int = 6) -> dict:
        """PPL(base), PPL(Q), their ratio, mean KLD and same-top fraction, each with its standard error."""
        s, n = self.sums, int(self.sums["count"])
        if n < 2:
            raise ValueError("Agreement.summary needs at least 2 scored tokens")
        log_q, err_q = _mean_and_error(s["nll"], s["nll2"], n)
        log_b, err_b = _mean_and_error(s["nll_base"], s["nll_base2"], n)
        cov = (s["nll_cross"] / n - log_q * log_b) / (n - 1)
        ratio_err = math.sqrt(max(err_q ** 2 + err_b ** 2 - 2 * cov, 0.0))
        kld, kld_err = _mean_and_error(s["kld"], s["kld2"], n)
        top = s["same_top"] / n
        r = lambda x: round(x, decimals)  # noqa: E731
        return {"tokens": n, "ppl_base": r(math.exp(log_b)), "ppl": r(math.exp(log_q)),
                "ppl_ratio": r(math.exp(log_q - log_b)), "ppl_ratio_err": r(math.exp(log_q - log_b) * ratio_err),
                "mean_kld": r(kld), "mean_kld_err": r(kld_err),
                "same_top": r(top), "same_top_err": r(math.sqrt(top * (1 - top) / (n - 1)))}
