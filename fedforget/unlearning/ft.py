"""FT: fine-tune on the reachable retain data only (paper 000, eq. 1). Never touches forget data."""

from __future__ import annotations

from fedforget.unlearning.base import GRADIENT, RETAIN, Method, Phase


class FineTune(Method):
    name = "ft"

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("finetune", GRADIENT, budget, (RETAIN,))]
