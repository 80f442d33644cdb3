"""safetensors reader: equal to what ``safe_open`` reports on real files; corrupt files are refused in one line."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open

from ckptlint.dtypes import SAFETENSORS
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint
from ckptlint.readers import safetensors_reader as st_reader


def library_view(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """What the safetensors library itself reports: key -> (shape, canonical dtype), and the metadata."""
    with safe_open(str(path), framework="np") as f:
        tensors = {}
        for k in f.keys():  # noqa: SIM118 - safe_open is not a dict
            sl = f.get_slice(k)
            tensors[k] = (tuple(sl.get_shape()), SAFETENSORS.get(sl.get_dtype(), sl.get_dtype()))
        return tensors, f.metadata() or {}


def our_view(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    ckpt = read_checkpoint(path)
    return {k: (t.shape, t.dtype) for k, t in ckpt.tensors.items()}, ckpt.metadata


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dtype torch can write to safetensors, scalars and empty tensors, with metadata."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, 4, generator=g).bfloat16(),
        "f64": torch.randn(2, generator=g).double(),
        "i64": torch.arange(6).reshape(2, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16),
        "i8": torch.arange(4, dtype=torch.int8),
        "u8": torch.arange(4, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f8e4m3": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
        "f8e5m2": torch.randn(8, generator=g).to(torch.float8_e5m2),
        "scalar": torch.tensor(3.0),
        "empty": torch.zeros(0, 7),
        "model.layers.0.weight": torch.randn(16, 8, generator=g),
    }
    path = tmp_path_factory.mktemp("st") / "torch.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "ckptlint test"})
    return path


@pytest.fixture(scope="module")
def numpy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((4, 4)).astype(np.float32),
        "b": rng.integers(0, 9, (3,)).astype(np.uint16),
        "c": rng.integers(0, 9, (2, 2)).astype(np.uint32),
        "d": rng.integers(0, 9, (2,)).astype(np.uint64),
        "e": (rng.standard_normal(3) + 1j).astype(np.complex64),
    }
    path = tmp_path_factory.mktemp("st") / "numpy.safetensors"
    save_file(tensors, str(path), metadata={"framework": "numpy"})
    return path


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real file whose header is short enough to mutate byte by byte."""
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("st") / "small.safetensors"
    save_file(
        {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float16), "s": np.array(1, np.int64)},
        str(path),
        metadata={"k": "v"},
    )
    return path


def corpus_safetensors(corpus: Path) -> list[Path]:
    return sorted(corpus.rglob("*.safetensors"))


def test_torch_written_file_equals_safe_open(torch_file: Path) -> None:
    assert our_view(torch_file) == library_view(torch_file)
    ckpt = read_checkpoint(torch_file)
    assert ckpt.format == "safetensors" and ckpt.key_sep == "."
    assert ckpt.metadata == {"format": "pt", "note": "ckptlint test"}
    assert ckpt.tensors["bf16"].dtype == "bfloat16" and ckpt.tensors["bf16"].nbytes == 2 * 3 * 4 * 2
    assert ckpt.tensors["scalar"].shape == () and ckpt.tensors["empty"].nbytes == 0


def test_numpy_written_file_equals_safe_open(numpy_file: Path) -> None:
    assert our_view(numpy_file) == library_view(numpy_file)
    assert read_checkpoint(numpy_file).metadata == {"framework": "numpy"}


def test_offsets_point_at_the_tensor_bytes(torch_file: Path) -> None:
    """TensorInfo.offset/nbytes select exactly the bytes safe_open returns for the tensor."""
    import torch

    raw = torch_file.read_bytes()
    ckpt = read_checkpoint(torch_file)
    with safe_open(str(torch_file), framework="pt") as f:
        for key, info in ckpt.tensors.items():
            expected = (
                f.get_tensor(key).reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
                if info.nbytes
                else b""
            )
            assert raw[info.offset : info.offset + info.nbytes] == expected, key


def test_corpus_files_equal_safe_open(corpus: Path) -> None:
    files = corpus_safetensors(corpus)
    assert len(files) >= 5
    for path in files:
        assert our_view(path) == library_view(path), path


def test_hand_parse_is_header_only(torch_file: Path, tmp_path: Path) -> None:
    """A file whose data region is unreadable garbage but has the right size reads the same as the original."""
    raw = torch_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(raw[: 8 + n] + b"\xff" * (len(raw) - 8 - n))
    assert our_view(garbage) == our_view(torch_file)


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 20, -1, -2, -100])
def test_truncations_are_unreadable(torch_file: Path, tmp_path: Path, cut: int) -> None:
    raw = torch_file.read_bytes()
    out = tmp_path / "cut.safetensors"
    out.write_bytes(raw[:cut])
    with pytest.raises(UnreadableCheckpoint) as info:
        read_checkpoint(out)
    assert "\n" not in str(info.value)


def test_every_truncation_of_a_small_file_is_unreadable(small_file: Path, tmp_path: Path) -> None:
    raw = small_file.read_bytes()
    out = tmp_path / "cut.safetensors"
    for cut in range(1, len(raw)):
        out.write_bytes(raw[:cut])
        with pytest.raises(UnreadableCheckpoint):
            read_checkpoint(out)
        with pytest.raises(SafetensorError):
            safe_open(str(out), framework="np")


def _mutations(raw: bytes, positions: range):
    for i in positions:
        for b in {raw[i] ^ 0x01, raw[i] ^ 0x20, ord("9"), ord("}")}:
            if b != raw[i]:
                yield i, raw[:i] + bytes([b]) + raw[i + 1 :]


def _differential(path: Path) -> tuple[str, object]:
    try:
        lib = library_view(path)
    except SafetensorError:
        lib = None
    try:
        ours = our_view(path)
    except UnreadableCheckpoint as exc:
        assert "\n" not in str(exc)
        ours = None
    return lib, ours


def test_flipped_header_bytes_agree_with_safe_open(small_file: Path, tmp_path: Path) -> None:
    """Every byte of the header (and the length) mutated: we accept exactly what safe_open accepts, and agree."""
    raw = small_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    out = tmp_path / "m.safetensors"
    rejected = 0
    for i, mutated in _mutations(raw, range(8 + n)):
        out.write_bytes(mutated)
        lib, ours = _differential(out)
        assert ours == lib, (i, mutated[: 8 + n])
        rejected += lib is None
    assert rejected > 100  # the mutations did hit the validation paths


def test_flipped_header_bytes_of_a_corpus_file(corpus: Path, tmp_path: Path) -> None:
    raw = (corpus / "hf" / "hf_clip_tiny" / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    out = tmp_path / "m.safetensors"
    for i, mutated in _mutations(raw, range(0, 8 + n, 37)):
        out.write_bytes(mutated)
        lib, ours = _differential(out)
        assert ours == lib, i


def _write(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return path


def test_absurd_header_length_is_refused_before_allocating(small_file: Path, tmp_path: Path) -> None:
    raw = small_file.read_bytes()
    for length in (2**60, 2**64 - 1, 100_000_001, len(raw)):
        out = tmp_path / f"huge{length}.safetensors"
        out.write_bytes(struct.pack("<Q", length) + raw[8:])
        tracemalloc.start()
        with pytest.raises(UnreadableCheckpoint) as info:
            st_reader.read(out)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20
        assert "header length" in info.value.reason


def test_header_over_100mb_is_refused_even_when_the_file_is_larger(tmp_path: Path) -> None:
    out = tmp_path / "big.safetensors"
    with out.open("wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001) + b"{")
        fh.truncate(100_000_020)  # sparse: no disk used
    with pytest.raises(UnreadableCheckpoint, match="100 MB"):
        read_checkpoint(out)
    with pytest.raises(SafetensorError):
        safe_open(str(out), framework="np")


F32 = {"dtype": "F32", "shape": [2]}


@pytest.mark.parametrize(
    ("header", "data_len", "needle"),
    [
        ({"a": {**F32, "data_offsets": [0, 8]}, "b": {**F32, "data_offsets": [4, 12]}}, 12, "'b'"),  # overlap
        ({"a": {**F32, "data_offsets": [8, 16]}}, 16, "'a'"),  # gap at the start
        ({"a": {**F32, "data_offsets": [0, 8]}}, 12, "end of the data region"),  # trailing bytes not covered
        ({"a": {**F32, "data_offsets": [0, 12]}}, 12, "'a'"),  # offsets disagree with shape x dtype
        ({"a": {**F32, "data_offsets": [0, 8]}}, 4, "'a'"),  # past the end of the file
        ({"a": {**F32, "data_offsets": [8, 0]}}, 8, "'a'"),  # end before begin
        ({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, 8, "F99"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, "'a'"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8, "'a'"),
        ({"__metadata__": {"x": 1}, "a": {**F32, "data_offsets": [0, 8]}}, 8, "__metadata__"),
        ({"a": [1, 2]}, 0, "'a'"),
    ],
)
def test_inconsistent_headers_name_the_problem(
    tmp_path: Path, header: dict, data_len: int, needle: str
) -> None:
    out = _write(tmp_path / "x.safetensors", header, b"\0" * data_len)
    with pytest.raises(SafetensorError):
        safe_open(str(out), framework="np")
    with pytest.raises(UnreadableCheckpoint) as info:
        read_checkpoint(out)
    assert needle in info.value.reason and "\n" not in str(info.value)


def test_non_json_and_non_object_headers(tmp_path: Path) -> None:
    for i, header in enumerate([b"{not json}", b"[1, 2]", b"{\xff\xfe}", b'{"a": 1'.ljust(16)]):
        out = _write(tmp_path / f"x{i}.safetensors", header, b"")
        with pytest.raises(UnreadableCheckpoint):
            st_reader.read(out)


def test_empty_header_and_padding(tmp_path: Path) -> None:
    """``{}`` padded with spaces (the library pads to 8 bytes) is a valid file with no tensors."""
    out = _write(tmp_path / "e.safetensors", b"{}      ", b"")
    assert our_view(out) == library_view(out) == ({}, {})
