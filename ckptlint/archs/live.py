"""``--model MODULE:FACTORY``: the expected tree of a live model definition, built without allocating weights.

``MODULE`` is an importable module (the current directory is searched first) or a path to a ``.py`` file;
``FACTORY`` is called with no arguments and returns one of:

* a ``torch.nn.Module`` -- it is built inside ``with torch.device("meta")`` so no weights are allocated; the
  expectation is its ``state_dict()``: parameters and persistent buffers, not non-persistent buffers; tied weights
  appear under every name ``state_dict()`` gives;
* a mapping of names to torch tensors (a ``state_dict``);
* ``(flax_module, *example_inputs)`` -- ``jax.eval_shape(module.init, PRNGKey(0), *example_inputs)`` gives the
  variables without computing anything; the expectation is their ``params`` collection, paths joined with ``/``;
* a params pytree, or a ``jax.eval_shape`` result (nested dicts of arrays / ShapeDtypeStruct; a top-level
  ``params`` entry is taken as the collection).

torch and jax are imported only here, inside the functions that need them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckptlint.errors import CkptlintError, UsageError
from ckptlint.expected import Expected, ExpectedTensor

MAX_DEPTH = 64


def expected_from_factory(spec: str) -> Expected:
    """Build the model ``spec`` names (``MODULE:FACTORY``) and take its expected tree (source="model")."""
    module_name, sep, factory_name = spec.rpartition(":")
    if not sep or not module_name or not factory_name.isidentifier():
        raise UsageError(f"--model {spec!r}: expected MODULE:FACTORY (e.g. mypkg.models:make_clip)")
    module = _import(module_name, spec)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UsageError(f"--model {spec}: {module_name} has no callable {factory_name!r}")
    result = _call(factory, spec)
    if _is_torch_module(result):
        tree, kind = (
            _torch_tree(result.state_dict()),
            f"torch {type(result).__qualname__}.state_dict() on meta",
        )
        return _expected(spec, tree, ".", "torch", kind)
    if isinstance(result, Mapping) and result and all(_is_torch_tensor(v) for v in result.values()):
        return _expected(spec, _torch_tree(result), ".", "torch", "torch state_dict")
    if isinstance(result, tuple) and result and _is_flax_module(result[0]):
        variables = _eval_shape(result[0], result[1:], spec)
        return _expected(
            spec, _flax_tree(variables, spec), "/", "flax", f"flax {type(result[0]).__qualname__}"
        )
    if _is_flax_module(result):
        raise UsageError(
            f"--model {spec}: {factory_name}() returned a flax module without inputs; return "
            "(module, *example_inputs) so that jax.eval_shape(module.init, rng, *example_inputs) can build it, "
            "or return a params pytree"
        )
    if isinstance(result, Mapping):
        return _expected(spec, _flax_tree(result, spec), "/", "flax", "params pytree")
    raise UsageError(
        f"--model {spec}: {factory_name}() returned {type(result).__name__}; expected a torch.nn.Module, a "
        "state_dict, (flax_module, *example_inputs) or a params pytree"
    )


def _import(module_name: str, spec: str) -> Any:
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or loader_spec.loader is None or not path.is_file():
                raise UsageError(f"--model {spec}: no such file {module_name}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
            return module
        cwd = str(Path.cwd())
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module_name)
        finally:
            if added:
                sys.path.remove(cwd)
    except UsageError:
        raise
    except Exception as exc:  # the user's module: any error it raises is theirs to see, in one line
        raise UsageError(
            f"--model {spec}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None


def _call(factory: Any, spec: str) -> Any:
    """Call the factory; torch modules it creates land on the meta device (no weights allocated)."""
    use_meta = "torch" in sys.modules or not ({"jax", "flax"} & set(sys.modules))
    try:
        if use_meta and importlib.util.find_spec("torch") is not None:
            import torch

            with torch.device("meta"):
                return factory()
        return factory()
    except Exception as exc:  # the user's code
        raise UsageError(f"--model {spec}: calling the factory failed: {type(exc).__name__}: {exc}") from None


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_flax_module(obj: Any) -> bool:
    linen = sys.modules.get("flax.linen")
    return linen is not None and isinstance(obj, linen.Module)


def _torch_tree(sd: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    from ckptlint.dtypes import TORCH_DTYPE

    out = {}
    for key, tensor in sd.items():
        name = str(tensor.dtype).removeprefix("torch.")
        out[key] = (tuple(int(d) for d in tensor.shape), TORCH_DTYPE.get(name, name))
    return out


def _eval_shape(module: Any, inputs: tuple[Any, ...], spec: str) -> Any:
    import jax

    try:
        return jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    except Exception as exc:  # the user's model
        raise UsageError(
            f"--model {spec}: jax.eval_shape(module.init, ...) failed: {type(exc).__name__}: {exc}"
        ) from None


def _flax_tree(variables: Any, spec: str) -> dict[str, tuple[tuple[int, ...], str]]:
    if isinstance(variables, Mapping) and "params" in variables and isinstance(variables["params"], Mapping):
        variables = variables["params"]
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise UsageError(f"--model {spec}: params nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}/{key}" if path else str(key), depth + 1)
        elif hasattr(node, "shape") and hasattr(node, "dtype"):
            out[path] = (tuple(int(d) for d in node.shape), str(node.dtype))
        elif node is not None:
            raise UsageError(
                f"--model {spec}: {path or 'the result'} is a {type(node).__name__}, not an array"
            )

    walk(variables, "", 0)
    if not out:
        raise UsageError(f"--model {spec}: the model has no parameters")
    return out


def _expected(
    spec: str, tree: dict[str, tuple[tuple[int, ...], str]], sep: str, framework: str, kind: str
) -> Expected:
    tensors = {k: ExpectedTensor(shape=s, dtype=d) for k, (s, d) in tree.items()}
    exp = Expected(
        arch=spec,
        variant=None,
        source="model",
        framework=framework,
        key_sep=sep,
        tensors=tensors,
        params={"inferred_from": f"{spec}() -> {kind}"},
        description=kind,  # e.g. "torch CLIPVisionModel.state_dict() on meta"; the arch name is the spec itself
    )
    return _with_layout(exp)


def _with_layout(exp: Expected) -> Expected:
    """Name the framework and the towers when the live model's keys are a known layout (for the explainers)."""
    from ckptlint.archs import resolve_expected
    from ckptlint.archs.detect import detect_layout
    from ckptlint.checkpoint import Checkpoint, tensor_info

    ckpt = Checkpoint(
        path=exp.arch,
        format="flax-msgpack" if exp.key_sep == "/" else "torch-zip",  # as the model's weights would be saved
        key_sep=exp.key_sep,
        tensors={k: tensor_info(t.shape, t.dtype) for k, t in exp.tensors.items()},
    )
    guess = detect_layout(ckpt)
    if guess.name == "unknown" or guess.root or not guess.arch:
        return exp
    exp.framework = guess.framework
    exp.params["layout"] = guess.name
    try:
        spec_exp = resolve_expected(guess.arch, ckpt)
    except CkptlintError:
        return exp
    if set(spec_exp.tensors) == set(exp.tensors):
        exp.towers = spec_exp.towers
        exp.params["arch"] = guess.arch
        exp.params["variant"] = spec_exp.variant
    return exp
