"""npz / npy reader: equal to what numpy reports on real files, header-only, corrupt files refused in one line."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import npz as npz_reader
from ckptlint.readers import read_checkpoint


def numpy_view(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """What np.load reports (trusted file, no pickles), with big_vision's ``V2`` read as bfloat16."""
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
            a = z[k]
            name = "bfloat16" if a.dtype.kind == "V" and a.dtype.itemsize == 2 else a.dtype.name
            out[k] = (a.shape, name)
        return out


def our_view(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (t.shape, t.dtype) for k, t in read_checkpoint(path).tensors.items()}


def big_vision_tree() -> dict[str, np.ndarray]:
    """A big_vision-style flattened checkpoint: params/opt/chrono, bfloat16 momentum stored as raw V2."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((4, 4, 3, 8)).astype(np.float32)
    return {
        "params/img/embedding/kernel": kernel,
        "params/img/embedding/bias": np.zeros(8, np.float32),
        "params/img/pos_embedding": rng.standard_normal((1, 4, 8)).astype(np.float32),
        "params/t": np.array([2.3025851], np.float32),
        "opt/1/0/0/0": np.array(1, np.int32),
        "opt/1/0/2/1/img/embedding/kernel": kernel.astype(ml_dtypes.bfloat16).view("V2"),
        "chrono/accum_examples_seen": np.array(2, np.int64),
        "chrono/accum_train_time": np.array(1.5, np.float64),
        "misc/f16": np.ones((2, 2), np.float16),
        "misc/u8": np.arange(5, dtype=np.uint8),
        "misc/bool": np.array([True, False]),
        "misc/c128": np.ones(3, np.complex128),
        "misc/big_endian": np.ones(3, ">f4"),
        "misc/fortran": np.asfortranarray(np.ones((3, 2), np.float32)),
        "misc/empty": np.zeros((0, 5), np.float32),
        "misc/str": np.array(["ab", "cde"]),
        "misc/bytes": np.array([b"ab"]),
        "misc/datetime": np.array(["2024-01-01"], "datetime64[D]"),
        "misc/structured": np.zeros(2, [("a", "<f4"), ("b", "<i2", (3,))]),
        "misc/f8": np.ones(4, ml_dtypes.float8_e4m3fn).view("V1"),
    }


@pytest.fixture(scope="module", params=["savez", "savez_compressed"])
def bv_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("npz") / f"{request.param}.npz"
    getattr(np, request.param)(path, **big_vision_tree())
    return path


def test_savez_files_equal_np_load(bv_file: Path) -> None:
    assert our_view(bv_file) == numpy_view(bv_file)
    ckpt = read_checkpoint(bv_file)
    assert ckpt.format == "npz" and ckpt.key_sep == "/"
    assert ckpt.groups == ["chrono", "misc", "opt", "params"]
    assert ckpt.tensors["opt/1/0/2/1/img/embedding/kernel"].dtype == "bfloat16"
    with np.load(bv_file) as z:
        for key, info in ckpt.tensors.items():
            assert info.nbytes == z[key].nbytes, key
            assert info.storage == f"{key}.npy"


def test_stored_member_offsets_point_at_the_array_bytes(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    tree = big_vision_tree()
    np.savez(path, **tree)
    ckpt = read_checkpoint(path)
    with zipfile.ZipFile(path) as zf:
        for key, info in ckpt.tensors.items():
            member = zf.read(f"{key}.npy")
            arr = tree[key]
            fortran = arr.flags.f_contiguous and not arr.flags.c_contiguous  # np.save keeps Fortran order
            assert member[info.offset : info.offset + info.nbytes] == arr.tobytes(
                order="F" if fortran else "C"
            ), key


def test_header_parse_equals_numpy_lib_format(bv_file: Path) -> None:
    """Our npy header parse equals numpy.lib.format's on every member (shape, fortran order, item size)."""
    with zipfile.ZipFile(bv_file) as zf:
        for name in zf.namelist():
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                assert version in ((1, 0), (2, 0)), name
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(fh)
                data_offset = fh.tell()
            with zf.open(name) as fh:
                ours = npz_reader.read_npy_header(fh, where=name, path=str(bv_file))
            assert ours.fortran_order == fortran, name
            assert (
                ours.itemsize * (1 if dtype.shape == () else int(np.prod(dtype.shape))) == dtype.itemsize
            ), name
            assert ours.shape == tuple(shape) + dtype.shape, name
            assert ours.data_offset == data_offset, name


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_format_versions(tmp_path: Path, version: tuple[int, int]) -> None:
    arr = np.zeros((3, 4), [("é" if version == (3, 0) else "x", "<f4")])
    path = tmp_path / "v.npy"
    with path.open("wb") as fh:
        np.lib.format.write_array(fh, arr, version=version)
    ckpt = read_checkpoint(path)
    loaded = np.load(path)
    assert ckpt.format == "npy"
    assert ckpt.tensors == {"v": ckpt.tensors["v"]}
    assert ckpt.tensors["v"].shape == loaded.shape and ckpt.tensors["v"].dtype == loaded.dtype.name
    assert ckpt.tensors["v"].nbytes == loaded.nbytes


def test_np_save_npy_files(tmp_path: Path) -> None:
    for name, arr in big_vision_tree().items():
        path = tmp_path / (name.replace("/", "_") + ".npy")
        np.save(path, arr)
        info = read_checkpoint(path).tensors[path.stem]
        loaded = np.load(path, mmap_mode="r")
        expected = (
            "bfloat16" if loaded.dtype.kind == "V" and loaded.dtype.itemsize == 2 else loaded.dtype.name
        )
        assert (info.shape, info.dtype, info.nbytes) == (loaded.shape, expected, loaded.nbytes), name


def test_python2_long_suffix_header(tmp_path: Path) -> None:
    """Headers written by Python 2 spell ints ``3L``; numpy reads them, so do we."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 2L), }"
    header += " " * (118 - len(header)) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1")
    path = tmp_path / "py2.npy"
    path.write_bytes(raw + np.ones((3, 2), "<f4").tobytes())
    with pytest.warns(UserWarning):
        expected = np.load(path)
    info = read_checkpoint(path).tensors["py2"]
    assert (info.shape, info.dtype) == (expected.shape, expected.dtype.name)


def test_corpus_big_vision_files(corpus: Path) -> None:
    layouts = json.loads((corpus / "big_vision" / "tiny_layouts.json").read_text())
    assert set(layouts) == {"tiny_clippo.npz", "tiny_vit.npz", "tiny_vit_bare.npz"}
    for name, layout in layouts.items():
        path = corpus / "big_vision" / name
        ckpt = read_checkpoint(path)
        assert {k: (list(t.shape), t.dtype) for k, t in ckpt.tensors.items()} == {
            k: (shape, recovered) for k, (shape, _, recovered) in layout.items()
        }
        assert our_view(path) == numpy_view(path)
    clippo = read_checkpoint(corpus / "big_vision" / "tiny_clippo.npz")
    assert clippo.groups == ["chrono", "opt", "params"]
    assert len(clippo.tensors) == 282
    assert read_checkpoint(corpus / "big_vision" / "tiny_vit.npz").groups == ["params"]


def test_deflated_member_is_not_decompressed(tmp_path: Path) -> None:
    """A 64 MiB deflated member: reading its header must not decompress (or allocate) the data."""
    path = tmp_path / "big.npz"
    arr_header = {"descr": "<f4", "fortran_order": False, "shape": (16, 1 << 20)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("big.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, arr_header)
        chunk = bytes(1 << 20)
        for _ in range(64):
            fh.write(chunk)
    tracemalloc.start()
    ckpt = read_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ckpt.tensors["big"].shape == (16, 1 << 20) and ckpt.tensors["big"].nbytes == 64 << 20
    assert peak < 2 << 20
    with np.load(path) as z:
        assert z["big"].shape == (16, 1 << 20)


def test_member_shorter_than_its_header_claims(tmp_path: Path) -> None:
    """A header claiming more data than the member holds is unreadable, as np.load finds too."""
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        for n in (1000, 1 << 40):  # numpy would try to allocate 4 TiB for the second; we only compare sizes
            path = tmp_path / f"short{compression}_{n}.npz"
            with zipfile.ZipFile(path, "w", compression=compression) as zf, zf.open("x.npy", "w") as fh:
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": "<f4", "fortran_order": False, "shape": (n,)}
                )
                fh.write(bytes(64))
            if n == 1000:
                with pytest.raises(ValueError), np.load(path) as z:
                    z["x"]
            with pytest.raises(UnreadableCheckpoint, match=r"truncated member x\.npy"):
                read_checkpoint(path)


def test_huge_header_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{" + bytes(100))
    with pytest.raises(UnreadableCheckpoint, match="header"):
        read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_archives_are_unreadable(corpus: Path, tmp_path: Path, fraction: float) -> None:
    raw = (corpus / "big_vision" / "tiny_clippo.npz").read_bytes()
    out = tmp_path / "cut.npz"
    out.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(UnreadableCheckpoint) as info:
        read_checkpoint(out)
    assert "\n" not in str(info.value)


def test_truncated_npy_files_are_unreadable(tmp_path: Path) -> None:
    src = tmp_path / "a.npy"
    np.save(src, np.ones((4, 5), np.float32))
    raw = src.read_bytes()
    out = tmp_path / "cut.npy"
    for cut in range(6, len(raw)):
        out.write_bytes(raw[:cut])
        with pytest.raises(UnreadableCheckpoint):
            read_checkpoint(out)


def _numpy_or_reason(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: (z[k].shape, z[k].dtype.name) for k in z.files}
    except Exception as exc:  # whatever numpy raises on a corrupt file
        return f"{type(exc).__name__}: {exc}"


def test_flipped_member_header_bytes_agree_with_numpy(tmp_path: Path) -> None:
    """Every byte of a member's npy header mutated (zip rewritten with a valid CRC): we reject exactly what
    np.load rejects, and otherwise report what it reports."""
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 3), np.float32))
    member = buf.getvalue()
    out = tmp_path / "m.npz"
    checked = rejected = 0
    for i in range(len(member) - 24):
        for new in {member[i] ^ 0x01, ord("9"), ord(")"), ord(" ")} - {member[i]}:
            with zipfile.ZipFile(out, "w") as zf:
                zf.writestr("w.npy", member[:i] + bytes([new]) + member[i + 1 :])
                zf.writestr("b.npy", member)
            expected = _numpy_or_reason(out)
            try:
                ours = {k: (t.shape, t.dtype) for k, t in read_checkpoint(out).tensors.items()}
            except UnreadableCheckpoint as exc:
                assert "\n" not in str(exc)
                ours = None
            if isinstance(expected, str):
                assert ours is None, (i, new, expected)
                rejected += 1
            else:
                assert ours == expected, (i, new)
                checked += 1
    assert checked >= 3 and rejected > 100


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
        zf.writestr("a.npy", b"not an npy header at all")
    with pytest.raises(UnreadableCheckpoint, match="not an npy array"):
        npz_reader.read(path)


def test_non_npy_members_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    buf = io.BytesIO()
    np.save(buf, np.ones(3, np.float32))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", buf.getvalue())
        zf.writestr("notes.txt", "hi")
    ckpt = read_checkpoint(path)
    assert list(ckpt.tensors) == ["a"] and ckpt.metadata == {"other_members": ["notes.txt"]}
    with np.load(path) as z:
        assert z.files == ["a", "notes.txt"]


def test_object_array_is_recorded_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "created"
    path = tmp_path / "obj.npz"
    np.savez(path, ok=np.ones(2, np.float32), obj=np.array([{"a": 1}, None], dtype=object))
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["obj"].dtype == "object" and ckpt.tensors["obj"].shape == (2,)
    assert ckpt.tensors["ok"].dtype == "float32"
    with pytest.raises(ValueError, match="allow_pickle"), np.load(path) as z:
        z["obj"]
    assert not marker.exists()


class _Payload:
    """Unpickling this creates ``self.marker`` (builtins.open): a stand-in for code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["npz", "npy"])
def test_object_array_with_unsafe_global_is_reported_not_run(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "created-by-payload"
    arr = np.array([_Payload(marker), 1], dtype=object)
    if container == "npz":
        path = tmp_path / "evil.npz"
        np.savez(path, ok=np.ones(2, np.float32), evil=arr)
        key = "evil"
    else:
        path = tmp_path / "evil.npy"
        np.save(path, arr, allow_pickle=True)
        key = "evil"
    ckpt = read_checkpoint(path)
    assert not marker.exists()
    assert ckpt.tensors[key].dtype == "object"
    assert [f.code for f in fact_findings(ckpt)] == ["CK301"]
    assert "builtins.open" in fact_findings(ckpt)[0].message or "io.open" in fact_findings(ckpt)[0].message
    # the payload is real: numpy with allow_pickle=True runs it
    if container == "npz":
        with np.load(path, allow_pickle=True) as z:
            z[key]
    else:
        np.load(path, allow_pickle=True)
    assert marker.exists()


def test_safe_object_array_has_no_finding(tmp_path: Path) -> None:
    path = tmp_path / "dict.npy"
    np.save(path, {"a": np.ones(3, np.float32), "b": [1, "x"]}, allow_pickle=True)
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["dict"].dtype == "object" and ckpt.tensors["dict"].shape == ()
    assert fact_findings(ckpt) == []


def test_corrupt_object_array_pickle_is_unreadable(tmp_path: Path) -> None:
    src = tmp_path / "o.npy"
    np.save(src, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    raw = src.read_bytes()
    out = tmp_path / "cut.npy"
    out.write_bytes(raw[:-3])
    with pytest.raises(UnreadableCheckpoint, match="pickle"):
        read_checkpoint(out)


def test_canonical_header_fast_path_equals_literal_eval() -> None:
    """Headers as numpy writes them take a regex fast path; it must give what ast.literal_eval gives."""
    import ast

    shapes = [(), (0,), (3,), (4, 4), (1, 2, 3, 4, 5), (10**12,), tuple(range(1, 33))]
    for shape in shapes:
        for descr in ("<f4", ">i8", "|V2", "|b1", "<U5", "|S3", "<M8[ns]", "|O", "<c16"):
            for fortran in (False, True):
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    buf, {"descr": descr, "fortran_order": fortran, "shape": shape}
                )
                text = buf.getvalue()[10:].decode("latin1")
                assert npz_reader._CANONICAL_HEADER.match(text), text
                assert npz_reader._literal(text, (1, 0), "x", "x") == ast.literal_eval(text)


def test_local_header_name_mismatch_is_left_to_zipfile(tmp_path: Path) -> None:
    """The stored-member fast path defers to zipfile, which refuses a local header naming another file."""
    src = tmp_path / "a.npz"
    np.savez(src, weights=np.ones(3, np.float32))
    raw = bytearray(src.read_bytes())
    at = raw.index(b"weights.npy")  # first occurrence: the local header
    raw[at] = ord("W")
    out = tmp_path / "b.npz"
    out.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile), np.load(out) as z:
        z["weights"]
    with pytest.raises(UnreadableCheckpoint, match="corrupt npz archive"):
        read_checkpoint(out)
