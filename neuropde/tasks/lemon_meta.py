"""Meta-learning for LeMON (arXiv 2408.16168): the inner loop that adapts a copy of the weights to
one operator, the outer gradient over a batch of operators, and few-shot adaptation at evaluation.

:class:`MetaLearning` is a mixin of :class:`~neuropde.tasks.lemon.LeMONTask`. Per task of a batch
the weights are adapted by ``inner_steps`` SGD steps on the support loss (gradients clamped
element-wise) and the query loss is taken at the adapted weights; the outer gradient is the MEAN
over the K tasks of the query gradients (first order: the Jacobian of the adaptation is taken as
the identity; ``first_order=False`` unrolls every inner step). Reference notes ``lemon.md`` §2.3;
unlike the reference we average over tasks, not divide by the data batch size (pitfall 7).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from neuropde.errors import UserError

__all__ = ["MetaLearning", "clamp_elementwise", "leave_one_out_context", "shared_context"]


def leave_one_out_context(u0: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Context for each of S samples of one operator: the other S − 1 samples.

    u0: (S, n), target: (S, T, n) -> ctx_u0: (S, S − 1, n), ctx_target: (S, S − 1, T, n). Row i
    holds samples i+1, …, i+S−1 (mod S), so a sample never sees its own target.
    """
    S = u0.shape[0]
    idx = (torch.arange(S, device=u0.device)[:, None] + torch.arange(1, S, device=u0.device)) % S
    return u0[idx], target[idx]


def shared_context(support: dict, m: int) -> tuple[Tensor, Tensor]:
    """The whole support set {"u0": (S, n), "target": (S, T, n)} as the context of each of ``m``
    samples: (m, S, n), (m, S, T, n), expanded (views, no copies)."""
    return (support["u0"][None].expand(m, *support["u0"].shape),
            support["target"][None].expand(m, *support["target"].shape))


def clamp_elementwise(g: Tensor, c: float | None) -> Tensor:
    """Element-wise clamp to [−c, c]; complex gradients (spectral weights) per real/imaginary part."""
    if not c:
        return g
    if g.is_complex():
        return torch.view_as_complex(torch.view_as_real(g).clamp(-c, c))
    return g.clamp(-c, c)


class MetaLearning:
    """MAML over operators and few-shot adaptation, for a task that provides ``net`` (its
    ``use_context`` flag), ``_net(params, u0, ctx_u0, ctx_target)`` (normalised prediction with
    fast weights), ``_loss(out, target)``, ``_noisy(u)``, ``denormalize``, ``check_finite(loss)``,
    ``current_inner_lr()`` and the settings ``inner_steps``, ``inner_grad_clip``, ``first_order``,
    ``fewshot_steps`` and ``fewshot_lr`` (see :class:`~neuropde.tasks.lemon.LeMONTask`)."""

    def _task_loss(self, params: dict | None, part: dict, context: dict | None) -> tuple[Tensor, Tensor]:
        """Loss on one task's support or query set (``part``: u0 (S, n), target (S, T, n)); the
        context is the support set (``context``), or leave-one-out within ``part`` when None."""
        ctx_u0 = ctx_target = None
        if getattr(self.net, "use_context", False):
            if context is None:
                if part["u0"].shape[0] < 2:
                    raise UserError("a LeMON net with use_context=true needs at least 2 support samples per task")
                ctx_u0, ctx_target = leave_one_out_context(part["u0"], part["target"])
            else:
                ctx_u0, ctx_target = shared_context(context, part["u0"].shape[0])
        return self._loss(self._net(params, part["u0"], ctx_u0, ctx_target), part["target"])

    def inner_loop(self, support: dict, steps: int, lr: Tensor | float, train: bool = True,
                   losses: list | None = None) -> dict[str, Tensor]:
        """Adapt the trainable weights to one operator by ``steps`` SGD steps on its support loss.

        Parameters
        ----------
        support : {"u0": (S, n), "target": (S, T, n)} of one operator.
        steps, lr : inner SGD steps and learning rate (a tensor when it is learned).
        train : return fast weights that carry the outer gradient: first order, ``slow + (fast −
            slow).detach()`` (value fast, ∂/∂slow = I) with η in the graph through the last step
            when ``lr`` requires grad; second order, the whole unrolled graph. False: detached.
        losses : when a list, the support loss before each step is appended to it (floats).

        Returns
        -------
        dict name -> fast weight, for ``torch.func.functional_call`` on the net.
        """
        slow = {k: p for k, p in self.net.named_parameters() if p.requires_grad}
        if steps == 0:
            return slow if train else {k: p.detach() for k, p in slow.items()}
        lr_graph = isinstance(lr, Tensor) and lr.requires_grad and train
        if train and not self.first_order:  # second order: keep the graph of every step
            fast = dict(slow)
            for _ in range(steps):
                loss, _ = self._task_loss(fast, support, None)
                self.check_finite(loss)
                if losses is not None:
                    losses.append(loss.item())
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True, allow_unused=True)
                fast = {k: p if g is None else p - lr * clamp_elementwise(g, self.inner_grad_clip)
                        for (k, p), g in zip(fast.items(), grads)}
            return fast
        lr_value = lr.detach() if isinstance(lr, Tensor) else lr
        fast = {k: p.detach().requires_grad_(True) for k, p in slow.items()}
        for step in range(steps):
            loss, _ = self._task_loss(fast, support, None)
            self.check_finite(loss)
            if losses is not None:
                losses.append(loss.item())
            grads = torch.autograd.grad(loss, list(fast.values()), allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else clamp_elementwise(g, self.inner_grad_clip)
                     for p, g in zip(fast.values(), grads)]
            if step == steps - 1 and lr_graph:
                # the last step keeps η in the graph: ∂L_query/∂η = −<∇L_query(θ'), g_last>
                return {k: slow[k] + (p - slow[k]).detach() - lr * g for (k, p), g in zip(fast.items(), grads)}
            with torch.no_grad():
                fast = {k: (p - lr_value * g).requires_grad_(True) for (k, p), g in zip(fast.items(), grads)}
        if not train:
            return {k: p.detach() for k, p in fast.items()}
        return {k: slow[k] + (p - slow[k]).detach() for k, p in fast.items()}

    def _backward(self, loss: Tensor) -> None:
        if self._trainer is not None:
            self.manual_backward(loss)
        else:  # used outside a Trainer (tests, notebooks)
            loss.backward()

    def meta_gradients(self, batch: dict) -> dict[str, float]:
        """Accumulate the outer gradient of one batch of K tasks into ``.grad`` (mean over tasks)
        and return the mean query loss and relative L2 after adaptation and the mean support loss
        before it."""
        sup, qry = batch["support"], batch["query"]
        K = sup["u0"].shape[0]
        totals = {"loss": 0.0, "rel_l2": 0.0, "support_loss": 0.0}
        with nullcontext() if self.first_order else _math_attention():
            for k in range(K):
                s = {"u0": self._noisy(sup["u0"][k]), "target": sup["target"][k]}
                q = {"u0": self._noisy(qry["u0"][k]), "target": qry["target"][k]}
                # η's graph (when learned) is freed by each task's backward: rebuild it per task
                support_losses: list[float] = []
                fast = self.inner_loop(s, self.inner_steps, self.current_inner_lr(), train=True,
                                       losses=support_losses)
                if not support_losses:  # no inner step: the support loss at the slow weights
                    with torch.no_grad():
                        support_losses.append(self._task_loss(None, s, None)[0].item())
                totals["support_loss"] += support_losses[0] / K
                loss, err = self._task_loss(fast, q, s)
                self.check_finite(loss)
                self._backward(loss / K)  # the mean over tasks: K sets the scale, not the data batch size
                totals["loss"] += loss.item() / K
                totals["rel_l2"] += err.item() / K
        return totals

    def adapt(self, support: dict, steps: int | None = None, lr: float | None = None) -> dict[str, Tensor]:
        """Few-shot adaptation to one operator: fast weights after ``steps`` (default
        ``fewshot_steps``) SGD steps at ``lr`` (default ``fewshot_lr``, else the inner lr) on
        ``support`` = {"u0": (S, n), "target": (S, T, n)}; works under Lightning's inference mode."""
        steps = self.fewshot_steps if steps is None else int(steps)
        lr = lr if lr is not None else (self.fewshot_lr or float(self.current_inner_lr()))
        with torch.inference_mode(False), torch.enable_grad():
            support = {k: v.clone() for k, v in support.items()}  # inference tensors cannot enter autograd
            return self.inner_loop(support, steps, lr, train=False)

    def predict_adapted(self, params: dict | None, u0: Tensor, support: dict) -> Tensor:
        """Physical prediction (Q, T, n) of u0 (Q, n) with fast weights ``params`` (None: the
        net's own), the support set being the context."""
        ctx_u0, ctx_target = (shared_context(support, u0.shape[0]) if getattr(self.net, "use_context", False)
                              else (None, None))
        return self.denormalize(self._net(params, u0, ctx_u0, ctx_target))


def _math_attention():
    """Second-order MAML differentiates attention twice: only the math SDPA kernel supports that
    on every device (reference pitfall 10)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])
