"""One optimizer made of several: Lightning's automatic optimisation takes a single optimizer, and
mixed schemes (Muon on matrices, AdamW on the rest) need one ``step`` that evaluates the closure
once and then lets every member update its own parameters.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class CombinedOptimizer(Optimizer):
    """Several optimizers over disjoint parameters, seen as one.

    ``param_groups`` is the concatenation of the members' groups (the same dict objects), so
    learning-rate schedulers and gradient clipping act on every member as on any optimizer.

    Parameters
    ----------
    optimizers : dict name -> Optimizer, over disjoint parameter sets.
    """

    def __init__(self, optimizers: dict[str, Optimizer]):
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        self.optimizers = dict(optimizers)
        seen = set()
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError("a parameter belongs to two member optimizers")
                    seen.add(id(p))
        params = [p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self._link_groups()

    def _link_groups(self) -> None:
        self.param_groups = [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def state(self):  # the members own their state; a merged view for code that walks it
        merged = {}
        for opt in self.optimizers.values():
            merged.update(opt.state)
        return merged

    @state.setter
    def state(self, value):  # Optimizer.__init__ assigns an empty state: nothing to keep
        pass

    def step(self, closure=None):
        """Evaluate ``closure`` once (forward and backward), then step every member."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"members": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        members = state_dict["members"]
        if set(members) != set(self.optimizers):
            raise ValueError(f"optimizer state has members {sorted(members)}, this optimizer "
                             f"{sorted(self.optimizers)}: resume with the same optimizer= settings")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(members[name])
        self._link_groups()  # loading replaces the members' group dicts

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {type(o).__name__}({sum(len(g['params']) for g in o.param_groups)} tensors)"
                          for n, o in self.optimizers.items())
        return f"CombinedOptimizer({inner})"
