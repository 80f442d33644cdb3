"""What the rules see: the checkpoint, the expectation, the raw diff, and what is still unexplained."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

from ckptlint.archs import detect
from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.expected import Expected, ExpectedTensor, Unchecked
from ckptlint.record import record
from ckptlint.rules._training import TrainingSplit, split
from ckptlint.views import params_view

Shape = tuple[int, ...]


def torch_shape_equal(expected: Shape, actual: Shape) -> bool:
    """Shapes as ``load_state_dict`` compares them: a 1-d tensor loads into a 0-dim parameter."""
    if expected == actual:
        return True
    return len(expected) == 0 and len(actual) == 1 and actual[0] >= 1


@record(frozen=True)
class ShapeIssue:
    """A key present on both sides (possibly after a rename) whose shapes differ."""

    expected: Shape
    actual: Shape
    actual_key: str  # the checkpoint-side name (view key)


@record
class RawDiff:
    """The framework's own view of the pair, in the expected model's key names."""

    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[tuple[str, Shape, Shape]]  # key, expected, actual
    dtype_mismatch: list[tuple[str, str, str]]  # key, expected, actual


class Context:
    """Engine state shared by the rules of one run.

    ``view`` is the checkpoint as the expected model's loader sees it (for big_vision, the ``params`` group,
    keys relative to it); ``exp`` the expected tree. ``missing``/``unexpected``/``shape`` start as the raw
    diff and shrink as explainers consume what they account for; ``pairs`` maps expected keys to the
    checkpoint key that provides them (same name, or a rename an explainer established).
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        expected: Expected | None,
        *,
        user_expected: bool,
        view: dict[str, TensorInfo],
        view_root: str,
        exp: dict[str, ExpectedTensor],
        raw: RawDiff | None,
        torch_semantics: bool,
        layout: Any = None,
        inferred: Callable[[], Expected | None] | None = None,
        unchecked: Unchecked | None = None,
        origin: dict[str, list[str]] | None = None,
    ) -> None:
        self.ckpt = ckpt
        self.expected = expected
        self.user_expected = user_expected
        self.view = view
        self.view_root = view_root
        self.exp = exp
        self.raw = raw
        self.torch_semantics = torch_semantics
        self.layout = layout
        self._inferred = inferred
        self.unchecked = unchecked  # why there is no expectation, when its builder said (CK004)
        # a loader's view (transformers' renames, base-model prefix): view key -> the file keys it was read from
        self.origin = origin or {}
        self.missing: dict[str, None] = dict.fromkeys(raw.missing) if raw else {}
        self.unexpected: dict[str, None] = dict.fromkeys(raw.unexpected) if raw else {}
        self.shape: dict[str, ShapeIssue] = (
            {k: ShapeIssue(e, a, k) for k, e, a in raw.shape_mismatch} if raw else {}
        )
        self.pairs: dict[str, str] = {k: k for k in exp if k in view}
        self.transposed: set[str] = set()  # expected keys CK109 found stored transposed
        self.contradicted: set[str] = set()  # declared parameters CK113 named (image_size...): not said twice
        self._taken: list[tuple[str, str, ShapeIssue | None]] = []  # consumed since ``mark`` (``give_back``)

    # ---- names ---------------------------------------------------------------------------------------------
    @property
    def exp_sep(self) -> str:
        return self.expected.key_sep if self.expected else self.ckpt.key_sep

    @property
    def file_sep(self) -> str:
        return self.ckpt.key_sep

    def file_key(self, view_key: str) -> str:
        """The checkpoint's own full key for a view key (``img/t`` -> ``params/img/t``; under a loader, the file key
        it renamed: ``embeddings.position_ids`` -> ``text_model.embeddings.position_ids``)."""
        sources = self.origin.get(view_key)
        if sources is not None and len(sources) == 1:
            return sources[0]
        return self.view_root + view_key

    # ---- consuming the diff --------------------------------------------------------------------------------
    def consume_missing(self, keys: Iterable[str]) -> list[str]:
        taken = [k for k in keys if k in self.missing]
        for k in taken:
            del self.missing[k]
            self._taken.append(("missing", k, None))
        return taken

    def consume_unexpected(self, keys: Iterable[str]) -> list[str]:
        taken = [k for k in keys if k in self.unexpected]
        for k in taken:
            del self.unexpected[k]
            self._taken.append(("unexpected", k, None))
        return taken

    def consume_shape(self, keys: Iterable[str]) -> list[str]:
        taken = [k for k in keys if k in self.shape]
        for k in taken:
            self._taken.append(("shape", k, self.shape.pop(k)))
        return taken

    def mark(self) -> None:
        """Start recording what is consumed (the engine marks before each rule)."""
        self._taken = []

    def give_back(self) -> None:
        """Put back every diff entry consumed since ``mark``: a rule that reported nothing explained nothing, so
        the catch-alls (CK100/CK101/CK102) still see it and no entry of the raw diff leaves the report silently.
        A rename it recorded (``map_pair``) is undone with the shape clash it opened: the keys are again missing
        and unexpected, as the loader sees them."""
        for kind, key, issue in reversed(self._taken):
            if kind == "pair":
                self.pairs.pop(key, None)
            elif kind == "clash":  # the clash map_pair opened, or what it replaced
                if issue is None:
                    self.shape.pop(key, None)
                else:
                    self.shape[key] = issue
            elif kind == "missing":
                self.missing[key] = None
            elif kind == "unexpected":
                self.unexpected[key] = None
            elif key not in self.shape and issue is not None:
                self.shape[key] = issue
        self._taken = []

    def shapes_equal(self, expected: Shape, actual: Shape) -> bool:
        return torch_shape_equal(expected, actual) if self.torch_semantics else expected == actual

    def map_pair(self, exp_key: str, view_key: str) -> None:
        """Record that ``view_key`` provides ``exp_key`` (a rename an explainer found); a shape clash stays open."""
        self.consume_missing([exp_key])
        self.consume_unexpected([view_key])
        if exp_key not in self.pairs:
            self._taken.append(("pair", exp_key, None))
        self.pairs[exp_key] = view_key
        e, a = self.exp[exp_key].shape, self.view[view_key].shape
        if not self.shapes_equal(e, a):
            self._taken.append(("clash", exp_key, self.shape.get(exp_key)))
            self.shape[exp_key] = ShapeIssue(e, a, view_key)

    # ---- what the rules ask about --------------------------------------------------------------------------
    @cached_property
    def exp_framework(self) -> str | None:
        """The expected model's framework (big_vision, open_clip, hf, timm) or None."""
        if self.expected is None:
            return None
        return (
            detect.normalize(self.expected.framework)
            or detect.arch_framework(self.expected.arch)
            or detect.classify(self.exp)
        )

    @cached_property
    def file_framework(self) -> str | None:
        """The framework whose key names the checkpoint uses, by signatures (else the layout guess's)."""
        found = detect.classify(self.view)
        if found is None and self.layout is not None:
            found = detect.normalize(getattr(self.layout, "framework", None)) or detect.normalize(
                self.layout.name
            )
        return found

    @cached_property
    def file_towers(self) -> set[str]:
        """Towers the checkpoint holds, in whatever layout."""
        return detect.towers_present(self.view)

    @cached_property
    def exp_towers_present(self) -> set[str]:
        return detect.towers_present(self.exp)

    def exp_tower(self, key: str) -> str | None:
        """Tower of an expected key: ``Expected.towers`` when given, else the framework tables."""
        if self.expected is not None and self.expected.towers:
            tower = detect.towers_by_prefix(key, self.expected.towers)
            if tower is not None:
                return tower
        return detect.tower_of(key, self.exp_framework, self.exp_towers_present)

    def file_tower(self, key: str) -> str | None:
        return detect.tower_of(key, self.file_framework, self.file_towers)

    @cached_property
    def exp_structure(self) -> detect.Structure:
        return detect.structure({k: t.shape for k, t in self.exp.items()}, self.exp_framework)

    @cached_property
    def file_structure(self) -> detect.Structure:
        """Structure of the checkpoint read through the expected names where pairs exist."""
        shapes = {k: t.shape for k, t in self.view.items()}
        if self.exp_framework is not None and self.exp_framework == self.file_framework:
            # renamed pairs (module.x -> x) are probed under the expected name
            for e, a in self.pairs.items():
                if a in self.view:
                    shapes[e] = self.view[a].shape
            return detect.structure(shapes, self.exp_framework)
        return detect.structure(shapes, self.file_framework)

    @cached_property
    def file_params(self) -> dict[str, TensorInfo]:
        """The checkpoint's weights named as in its own framework (big_vision: relative to ``params``)."""
        if self.ckpt.key_sep == "/":
            return params_view(self.ckpt.tensors)[0]
        return self.view

    @cached_property
    def training(self) -> TrainingSplit:
        return split(self.ckpt)

    def inferred(self) -> Expected | None:
        """The architecture inferred from the checkpoint alone (``ckptlint.archs.infer_expected``), cached."""
        if self._inferred is None:
            return None
        value = self._inferred()
        self._inferred = lambda: value
        return value
