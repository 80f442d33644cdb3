"""CK201 — training state included

What it does
    Reports a checkpoint that carries more than the weights: optimizer state (big_vision ``opt/``, torch
    ``optimizer``/``scheduler``/``scaler``), counters (big_vision ``chrono/``, ``epoch``, ``step``), or a
    trainer dict that wraps the weights (``{"epoch", "state_dict", "optimizer"}``) — with how much larger it
    makes the file than the weights alone.

Why is this bad?
    Published weights should be just the weights: the optimizer moments typically double or triple the size
    (Adam keeps two moments per parameter; big_vision's CLIPPO adafactor keeps a bfloat16 momentum plus
    factored statistics), every download pays for them, and a trainer dict does not load into a model without
    unwrapping. It also leaks training details nobody asked for.

Example
    $ ckptlint check tiny_clippo.npz --arch clippo
    CK201 warning  training state included: opt/ (1.1 × params) and chrono/ make the file 2.1× larger than the
                   weights
                   cause: a big_vision trainer checkpoint ({params, opt, chrono}): 146.7 KiB of training state
                   next to 130.5 KiB of weights
                   fix: ckptlint strip --keep params IN OUT   (or save params only before publishing:
                   big_vision's colab loads utils.load_checkpoint(None, path)['params'])

Fix
    Save the weights alone before publishing: ``ckptlint strip --keep params IN OUT`` (big_vision; the colab
    loads ``utils.load_checkpoint(None, path)['params']``), ``torch.save(model.state_dict(), PATH)`` or
    ``safetensors.torch.save_file(model.state_dict(), PATH)`` (torch).
"""

from __future__ import annotations

from ckptlint.edits import DropGroups
from ckptlint.rules._context import Context
from ckptlint.rules._training import TrainingSplit, table
from ckptlint.rules.base import Message, Rule, Stage, rule


class TrainingState(Message):
    code = "CK201"
    message = "training state included: {groups} make{s} the file {ratio}× larger than the weights"
    cause = "{cause}"
    fix = "{fix_text}"


class TrainerWrapper(Message):
    code = "CK201"
    message = (
        "training state included: a trainer checkpoint dict — the weights sit under {weights} "
        "next to {others}"
    )
    cause = (
        "the file was saved by a training loop (torch.save of a dict with the model's state_dict "
        "and bookkeeping)"
    )
    fix = "{fix_text}"


def _size(n: int) -> str:
    """``150222 -> "146.7 KiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def state_groups(split: TrainingSplit, sep: str) -> list[str]:
    """The coarsest groups that hold training state and no weight (the ``drop_groups`` edit of this finding).

    ``opt``, ``chrono`` for big_vision; ``optimizer``, ``epoch`` for a trainer dict (non-tensor entries too);
    only the parts of ``opt/`` beside ``opt/target/`` when the weights sit there.
    """
    weight_prefixes = set()
    for k in split.weights:
        parts = k.split(sep)
        weight_prefixes.update(sep.join(parts[: i + 1]) for i in range(len(parts)))
    groups: dict[str, None] = {}
    for k in [*split.state, *split.non_tensor]:
        parts = k.split(sep)
        for i in range(1, len(parts) + 1):
            head = sep.join(parts[:i])
            if head not in weight_prefixes:
                groups[head] = None
                break
    return list(groups)


def _sum(infos: object) -> int:
    return sum(t.nbytes for t in infos.values())  # type: ignore[attr-defined]


@rule(
    "CK201",
    "warning",
    "training state included (optimizer, step counters, trainer wrapper)",
    stage=Stage.LAYOUT,
    order=2,
    rank=90,
)
class TrainingStateRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        split = ctx.training
        if not split.has_state:
            return []
        sep = ctx.file_sep
        ctx.consume_unexpected([k for k in list(ctx.unexpected) if ctx.file_key(k) in split.state])
        weights_bytes = _sum(split.weights)
        state_bytes = _sum(split.state)
        total = weights_bytes + state_bytes
        opt_bytes = {
            g: sum(t.nbytes for k, t in split.state.items() if k.split(sep, 1)[0] == g)
            for g in split.optimizer_groups
        }
        weights_group = split.weights_group or "weights"
        details = {
            "optimizer_groups": split.optimizer_groups,
            "counter_groups": split.counter_groups,
            "non_tensor": split.non_tensor,
            "weights_group": split.weights_group,
            "weights_bytes": weights_bytes,
            "state_bytes": state_bytes,
        }
        if sep == "/":
            fix_text = table()["big_vision"]["fix"]
        else:
            fix_text = table()["torch"]["fix"].format(weights=weights_group)
        firsts: dict[str, str] = {}
        for k in split.state:  # one example key per training-state group
            firsts.setdefault(k.split(sep, 1)[0], k)
        keys = list(firsts.values())
        edits = [DropGroups(groups=state_groups(split, sep), sep=sep)]
        if state_bytes == 0 or weights_bytes == 0:
            others = ", ".join(
                dict.fromkeys(split.counter_groups + split.optimizer_groups + split.non_tensor)
            )
            shown = f"{weights_group}/" if sep == "/" else f"ckpt[{weights_group!r}]"
            return [
                TrainerWrapper(
                    keys=keys,
                    edits=edits,
                    details=details,
                    weights=shown,
                    others=others or "bookkeeping",
                    fix_text=fix_text,
                )
            ]
        parts = []
        for g in split.optimizer_groups:
            share = opt_bytes.get(g, 0) / weights_bytes
            parts.append(f"{g}{sep} ({share:.1f} × {weights_group})" if share >= 0.05 else f"{g}{sep}")
        parts += [f"{g}{sep}" if sep == "/" else g for g in split.counter_groups]
        groups = " and ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else parts[0]
        ratio = total / weights_bytes
        details["ratio"] = round(ratio, 3)
        if split.weights_group == "opt/target":
            kind = "a flax.optim checkpoint (weights at opt/target/, optimizer state beside them)"
        elif sep == "/":
            kind = "a big_vision trainer checkpoint ({params, opt, chrono})"
        else:
            kind = "a trainer checkpoint"
        cause = f"{kind}: {_size(state_bytes)} of training state next to {_size(weights_bytes)} of weights"
        return [
            TrainingState(
                keys=keys,
                edits=edits,
                details=details,
                groups=groups,
                s="" if len(parts) > 1 else "s",
                ratio=f"{ratio:.1f}",
                cause=cause,
                fix_text=fix_text,
            )
        ]
