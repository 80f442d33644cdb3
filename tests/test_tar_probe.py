"""The tar probe's shortcut (no ``import tarfile`` for a file that cannot be a tar) agrees with tarfile itself.

``is_torch_tar`` decides some files from their first block alone; truth is ``tarfile.open(mode="r:")``, the test
``torch.load`` makes. Every input here goes through both.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import malicious_samples as ms
import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from ckptlint.readers.tar_probe import BLOCK, _not_a_tar, is_torch_tar


def _tarfile_accepts(data: bytes) -> bool:
    try:
        tarfile.open(fileobj=io.BytesIO(data), mode="r:").close()
    except tarfile.TarError:
        return False
    return True


def _tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo("storages")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def _with_checksum_field(block: bytes, field: bytes) -> bytes:
    return block[:148] + field.ljust(8, b"\0")[:8] + block[156:]


def _inputs() -> dict[str, bytes]:
    valid = _tar(tarfile.USTAR_FORMAT)
    header = valid[:BLOCK]
    out = {
        "ustar": valid,
        "gnu": _tar(tarfile.GNU_FORMAT),
        "pax": _tar(tarfile.PAX_FORMAT),
        "torch_tar": ms.tar_checkpoint(ms.tar_members({"w": ((2, 2), [1.0, 2.0, 3.0, 4.0])})),
        "zeros": bytes(2 * BLOCK),  # tarfile reads an empty archive
        "short": valid[: BLOCK - 1],
        "empty": b"",
        "safetensors": save_safetensors({"w": np.zeros((4, 4), np.float32)}),
        "npy": (lambda b: (np.save(b, np.arange(300)), b.getvalue())[1])(io.BytesIO()),
        "pickle": __import__("pickle").dumps({"w": list(range(300))}, protocol=2),
        # a checksum field that is a number but not the block's checksum; one that tarfile's int(…, 8) reads
        # although it is no plain octal; base-256; text; a NUL in front
        "wrong_sum": _with_checksum_field(header, b"0000000"),
        "underscored": _with_checksum_field(header, b"0_1"),
        "signed": _with_checksum_field(header, b" +7 "),
        "base256": _with_checksum_field(header, b"\x80" + bytes(7)),
        "base256_neg": _with_checksum_field(header, b"\xff" * 8),
        "text": _with_checksum_field(header, b'"dtype":'),
        "nul_first": _with_checksum_field(header, b"\0abc"),
        "eight": _with_checksum_field(header, b"0000008"),
    }
    corpus = Path(__file__).parent / "data" / "corpus"
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        out[path.relative_to(corpus).as_posix()] = path.read_bytes()[: 4 * BLOCK]
    rng = random.Random(0)
    alphabet = b"01234567 \t_+-oO8x\0\x80\xff"
    for i in range(300):
        field = bytes(rng.choice(alphabet) for _ in range(8))
        out[f"fuzz{i}"] = _with_checksum_field(header, field)
    return out


INPUTS = _inputs()


@pytest.mark.parametrize("name", list(INPUTS))
def test_probe_agrees_with_tarfile(name: str) -> None:
    data = INPUTS[name]
    accepted = _tarfile_accepts(data)
    if _not_a_tar(data[:BLOCK]):
        assert not accepted  # the shortcut only ever decides "not a tar"
    assert bool(is_torch_tar(io.BytesIO(data))) == accepted


def test_shortcut_decides_the_common_formats() -> None:
    # the point of the shortcut: none of these needs tarfile
    for name in ("safetensors", "pickle", "short", "empty", "text", "timm/timm_vit_clip_tiny.safetensors"):
        assert _not_a_tar(INPUTS[name][:BLOCK]), name
    assert sum(_not_a_tar(INPUTS[f"fuzz{i}"][:BLOCK]) for i in range(300)) > 50
