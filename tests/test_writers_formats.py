"""The writer on npz, npy, flax msgpack and safetensors inputs, and the operations of a write plan: every output
is read back by the format's own library and compared value by value with that library's load of the input."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from cli_support import ckptlint, one_error_line

from ckptlint.writers import (
    Cast,
    Concat,
    Entry,
    Reshape,
    Split,
    Stack,
    Transpose,
    WritePlan,
    split_entries,
    write_checkpoint,
)

BF16 = np.dtype(ml_dtypes.bfloat16)


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def st_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def flax_arrays(path: Path) -> dict[str, np.ndarray]:
    from flax import serialization
    from flax.traverse_util import flatten_dict

    return {
        "/".join(k): np.asarray(v)
        for k, v in flatten_dict(serialization.msgpack_restore(path.read_bytes())).items()
    }


def same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal shape and bytes; numpy's raw V2 (big_vision's bfloat16) equals ml_dtypes bfloat16 byte for byte."""
    want = np.array(want, order="C", copy=None)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.byteorder == ">":
        want = want.astype(want.dtype.newbyteorder("<"))
    assert got.dtype.itemsize == want.dtype.itemsize
    assert np.array(got, order="C", copy=None).tobytes() == want.tobytes()


@pytest.fixture
def odd_npz(tmp_path: Path) -> Path:
    """np.savez of what big_vision and hand-made files hold: bfloat16 (stored as raw V2), Fortran order,
    big-endian, int, bool, 0-d; and the same compressed."""
    rng = np.random.default_rng(0)
    arrays = {
        "params/img/embedding/kernel": rng.standard_normal((2, 2, 3, 8)).astype(BF16),
        "params/img/head/kernel": np.asfortranarray(rng.standard_normal((8, 5)).astype(np.float32)),
        "params/t": np.array(2.5, dtype=">f4"),
        "params/count": np.arange(6, dtype=np.int64).reshape(2, 3),
        "params/mask": rng.standard_normal(7) > 0,
        "opt/mu": rng.standard_normal((8, 5)).astype(np.float32),
    }
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    assert npz_arrays(path)["params/img/embedding/kernel"].dtype == np.dtype("V2")  # how numpy stores bf16
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_to_safetensors_exact(odd_npz: Path, tmp_path: Path, compressed: bool) -> None:
    src = odd_npz
    if compressed:
        src = tmp_path / "c.npz"
        np.savez_compressed(src, **npz_arrays(odd_npz))
    out = tmp_path / "params.safetensors"
    proc = ckptlint("strip", "--keep", "params", "--to", "safetensors", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    want = npz_arrays(src)
    from safetensors import safe_open

    with safe_open(str(out), framework="np") as f:
        assert f.get_slice("params/img/embedding/kernel").get_dtype() == "BF16"
        assert (
            f.get_slice("params/t").get_dtype() == "F32" and f.get_slice("params/mask").get_dtype() == "BOOL"
        )
    got = st_arrays(out)
    assert set(got) == {k for k in want if k.startswith("params/")}
    for k, v in got.items():
        same(v, want[k])
    assert got["params/img/embedding/kernel"].dtype == BF16


def test_npz_to_npz_and_msgpack_and_back(odd_npz: Path, tmp_path: Path) -> None:
    want = npz_arrays(odd_npz)
    msg = tmp_path / "state.msgpack"
    assert ckptlint("strip", "--drop", "opt", "--to", "msgpack", str(odd_npz), str(msg)).returncode == 0
    restored = flax_arrays(msg)
    assert set(restored) == {k for k in want if not k.startswith("opt/")}
    for k, v in restored.items():
        same(v, want[k])
    assert restored["params/img/embedding/kernel"].dtype == BF16  # flax restores bfloat16 by name
    back = tmp_path / "back.npz"
    assert ckptlint("strip", "--keep", "params", "--to", "npz", str(msg), str(back)).returncode == 0
    for k, v in npz_arrays(back).items():
        same(v, want[k])
    same_kind = tmp_path / "same.npz"
    assert ckptlint("strip", "--keep", "params", str(odd_npz), str(same_kind)).returncode == 0
    for k, v in npz_arrays(same_kind).items():  # npz to npz: members copied as they are
        assert v.dtype == want[k].dtype and v.tobytes() == want[k].tobytes()


def test_npy_to_safetensors(tmp_path: Path) -> None:
    arr = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    src = tmp_path / "w.npy"
    np.save(src, arr)
    out = tmp_path / "w.safetensors"
    write_checkpoint(src, [Entry("w", "w")], out, "safetensors")
    same(st_arrays(out)["w"], np.load(src))


def test_flax_msgpack_to_safetensors_and_chunked_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flax writes arrays over MAX_CHUNK_SIZE as chunked maps; both directions, with flax's own size lowered."""
    import jax.numpy as jnp
    from flax import serialization

    import ckptlint.writers.tensor_files as tf

    rng = np.random.default_rng(1)
    state = {
        "params": {
            "big": jnp.asarray(rng.standard_normal((50, 7)), jnp.bfloat16),
            "w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
        },
        "step": 12,
    }
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 256)  # 'big' (700 bytes) is written in 3 chunks
    src = tmp_path / "state.msgpack"
    src.write_bytes(serialization.to_bytes(state))
    monkeypatch.undo()
    want = flax_arrays(src)
    out = tmp_path / "params.safetensors"
    write_checkpoint(src, [Entry("big", "params/big"), Entry("w", "params/w")], out, "safetensors")
    got = st_arrays(out)
    same(got["big"], want["params/big"])
    same(got["w"], want["params/w"])
    monkeypatch.setattr(tf, "FLAX_CHUNK", 200)  # and ckptlint writes chunked arrays flax reads back
    again = tmp_path / "again.msgpack"
    write_checkpoint(out, [Entry("params/big", "big"), Entry("params/w", "w")], again, "msgpack")
    restored = flax_arrays(again)
    same(restored["params/big"], want["params/big"])
    assert restored["params/big"].dtype == BF16


def test_strip_msgpack_keeps_plain_values(tmp_path: Path) -> None:
    import jax.numpy as jnp
    from flax import serialization

    state = {"params": {"w": jnp.ones((2, 3))}, "opt": {"mu": jnp.zeros(3)}, "step": 7, "note": "x"}
    src = tmp_path / "s.msgpack"
    src.write_bytes(serialization.to_bytes(state))
    out = tmp_path / "o.msgpack"
    assert ckptlint("strip", "--drop", "opt", str(src), str(out)).returncode == 0
    restored = serialization.msgpack_restore(out.read_bytes())
    assert restored["step"] == 7 and restored["note"] == "x" and set(restored) == {"params", "step", "note"}


def test_safetensors_strip_same_format_keeps_metadata(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(2)
    tensors = {
        "model.w": rng.standard_normal((3, 4)).astype(np.float16),
        "ema.w": np.zeros((3, 4), np.float16),
    }
    src = tmp_path / "in.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt", "k": "v"})
    out = tmp_path / "out.safetensors"
    result = write_checkpoint(src, [Entry("w", "model.w")], out)
    from safetensors import safe_open

    with safe_open(str(out), framework="np") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
        same(f.get_tensor("w"), tensors["model.w"])
    assert result.format == "safetensors" and result.out.tensors["w"].dtype == "float16"


# --- operations -------------------------------------------------------------------------------------------


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    tensors = {
        "attn.in_proj_weight": rng.standard_normal((12, 4)).astype(np.float32),
        "attn.in_proj_bias": rng.standard_normal(12).astype(BF16),
        "proj": rng.standard_normal((4, 6)).astype(np.float32),
        "class_embedding": rng.standard_normal(4).astype(np.float32),
        "conv": rng.standard_normal((2, 2, 3, 4)).astype(np.float32),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_split_concat_transpose_reshape(weights: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    src, t = weights
    qkv = t["attn.in_proj_weight"]
    entries = [
        *split_entries(["q.weight", "k.weight", "v.weight"], "attn.in_proj_weight"),
        *split_entries(["q.bias", "k.bias", "v.bias"], "attn.in_proj_bias"),
        Entry("proj.weight", "proj", (Transpose(),)),
        Entry("cls_token", "class_embedding", (Reshape((1, 1, -1)),)),
        Entry("conv.weight", "conv", (Transpose((3, 2, 0, 1)),)),  # flax HWIO -> torch OIHW
        Entry(
            "kv", ("attn.in_proj_weight", "attn.in_proj_weight"), (Split(0, 1, sizes=(4, 4, 4)), Concat(0))
        ),
        Entry("stacked", ("proj", "proj"), (Stack(0),)),
        Entry("half", "proj", (Cast("float16"),)),
    ]
    out = tmp_path / "out.safetensors"
    write_checkpoint(src, WritePlan(entries), out, "safetensors")
    got = st_arrays(out)
    for i, name in enumerate("qkv"):
        same(got[f"{name}.weight"], qkv[4 * i : 4 * i + 4])
        same(got[f"{name}.bias"], t["attn.in_proj_bias"][4 * i : 4 * i + 4])
    same(got["proj.weight"], t["proj"].T)
    same(got["cls_token"], t["class_embedding"].reshape(1, 1, 4))
    same(got["conv.weight"], t["conv"].transpose(3, 2, 0, 1))
    same(got["kv"], np.concatenate([qkv[4:8], qkv[4:8]]))
    same(got["stacked"], np.stack([t["proj"], t["proj"]]))
    same(got["half"], t["proj"].astype(np.float16))
    # and back: q, k, v fused again equal the original, in every output format
    fuse = [
        Entry("in_proj_weight", ("q.weight", "k.weight", "v.weight"), (Concat(0),)),
        Entry("in_proj_bias", ("q.bias", "k.bias", "v.bias"), (Concat(0),)),
    ]
    for fmt, reader in (("safetensors", st_arrays), ("npz", npz_arrays), ("msgpack", flax_arrays)):
        back = tmp_path / f"back.{fmt}"
        write_checkpoint(out, fuse, back, fmt)
        fused = reader(back)
        same(fused["in_proj_weight"], qkv)
        same(fused["in_proj_bias"], t["attn.in_proj_bias"])


def test_plans_that_do_not_fit_are_usage_errors(
    weights: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    from ckptlint.errors import UsageError

    src, _ = weights
    out = tmp_path / "x.safetensors"
    bad = [
        [Entry("a", "nope")],
        [Entry("a", "proj"), Entry("a", "conv")],
        [Entry("a", "proj", (Split(0, 0, parts=3),))],
        [Entry("a", "proj", (Reshape((5, 5)),))],
        [Entry("a", ("proj", "conv"), (Concat(0),))],
        [Entry("a", ("proj", "conv"))],
        [],
    ]
    for plan in bad:
        with pytest.raises(UsageError):
            write_checkpoint(src, plan, out, "safetensors")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_dtype_the_output_cannot_hold_is_one_line(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    src = tmp_path / "f8.safetensors"
    save_file({"w": np.zeros(4, ml_dtypes.float8_e4m3fn)}, str(src))
    out = tmp_path / "f8.npz"
    assert "float8_e4m3fn, which npz cannot hold" in one_error_line(
        ckptlint("strip", "--keep", "w", "--to", "npz", str(src), str(out))
    )
    assert not out.exists() and len(list(tmp_path.iterdir())) == 1  # no temporary file left behind
