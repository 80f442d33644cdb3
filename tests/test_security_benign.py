"""Zero false positives: what the real libraries write is never CK301 nor unreadable (CK001).

Files come from the corpus in tests/data and from the libraries themselves at test time: torch.save (state dicts,
trainer dicts with optimizer, scheduler, scaler and argparse.Namespace, tensors of every dtype, quantized and
sparse tensors, both serialisations, pickle.dumps of tensors), an HF Trainer checkpoint folder written by a real
``Trainer`` (training_args.bin, optimizer.pt, scheduler.pt, rng_state.pth), save_pretrained with and without
safetensors, open_clip's ``save_for_hf``, timm's ``CheckpointSaver`` and ``save_for_hf``, flax msgpack, numpy
(npz, bf16 stored as V2, compressed, npy, pickled arrays), joblib.dump (plain, compressed, unaligned).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import random
import warnings
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from tiny_models import tiny_models as build_tiny_models

from ckptlint.api import check_files as check  # paths as given: a folder is read as one checkpoint

ALL_DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64,
    torch.bool, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
    torch.float8_e8m0fnu,
]  # fmt: skip


def assert_clean(path: Path) -> None:
    """No CK301, no CK001, no error: the check of a benign file says nothing about security."""
    (file,) = check(str(path)).files
    assert file.error is None, f"{path}: {file.error}"
    bad = [f"{f.code} {f.message}" for f in file.findings if f.code in ("CK301", "CK001")]
    assert bad == [], f"{path}: {bad}"


def every_file(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------------------
# the corpus in tests/data: every file and every folder
# --------------------------------------------------------------------------------------------------------------


def test_corpus_files_and_folders_are_clean(corpus: Path) -> None:
    weights = [p for p in every_file(corpus) if p.suffix != ".json"]
    folders = sorted(p for p in corpus.rglob("*") if p.is_dir() and any(q.is_file() for q in p.iterdir()))
    assert weights and folders
    for path in [*weights, *folders]:
        assert_clean(path)


# --------------------------------------------------------------------------------------------------------------
# torch.save
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_models(corpus: Path) -> dict[str, torch.nn.Module]:
    convnet = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    return {**build_tiny_models(corpus), "convnet": convnet}


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    for p in model.parameters():
        if p.requires_grad and not isinstance(p, torch.nn.parameter.UninitializedParameter):
            p.grad = torch.ones_like(p)
    opt.step()
    opt.zero_grad()


def trainer_states(model: torch.nn.Module) -> dict[str, dict]:
    """What training scripts save: optimizers, schedulers, a grad scaler, argparse args, epochs and metrics."""
    out = {}
    optimizers: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1e-3),
        "adam_amsgrad": lambda: torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5),
        "adagrad": lambda: torch.optim.Adagrad(model.parameters()),
    }
    for name, make in optimizers.items():
        opt = make()
        schedulers = {
            "step": torch.optim.lr_scheduler.StepLR(opt, step_size=2),
            "cosine": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
            "onecycle": torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=0.1, total_steps=10, cycle_momentum=name != "adagrad"
            ),
            "lambda": torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step),
        }
        _step(model, opt)
        for sched in schedulers.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sched.step()
        out[name] = {
            "epoch": 3,
            "step": 120,
            "arch": "tiny",
            "state_dict": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": {k: s.state_dict() for k, s in schedulers.items()},
            "scaler": torch.amp.GradScaler("cpu").state_dict(),
            "args": argparse.Namespace(
                lr=0.1, epochs=10, model="tiny", betas=(0.9, 0.99), amp=True, tags=None
            ),
            "metric": np.float64(0.5),
            "best": {"top1": 71.2, "epoch": 2},
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "cpu": torch.get_rng_state(),
            },
        }
    return out


def tensor_zoo() -> dict[str, object]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    zoo: dict[str, object] = {f"dtype_{str(d).split('.')[1]}": torch.zeros(3, 2, dtype=d) for d in ALL_DTYPES}
    zoo.update(
        views={"base": base, "row": base[1], "t": base.t(), "strided": base[::2, 1::3]},
        scalar=torch.tensor(2.0),
        empty=torch.zeros(0, 3),
        param=torch.nn.Parameter(torch.ones(2)),
        frozen=torch.nn.Parameter(torch.ones(2), requires_grad=False),
        qint8=torch.quantize_per_tensor(torch.rand(4), 0.1, 3, torch.qint8),
        quint8=torch.quantize_per_tensor(torch.rand(4), 0.1, 3, torch.quint8),
        qint32=torch.quantize_per_tensor(torch.rand(4), 0.1, 0, torch.qint32),
        per_channel=torch.quantize_per_channel(torch.rand(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.quint8),
        sparse_coo=torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (2, 2)),
        sparse_csr=torch.eye(3).to_sparse_csr(),
        device=torch.device("cpu"),
        dtype=torch.float16,
        size=torch.Size([2, 3]),
        ordered=collections.OrderedDict(a=torch.zeros(1)),
        misc={"none": None, "t": (1, 2.5, "x", b"raw", True), "s": {1, 2}, "f": frozenset({3}), "c": 1 + 2j},
    )  # fmt: skip
    return zoo


@pytest.fixture(scope="session")
def torch_files(
    tiny_models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    out = tmp_path_factory.mktemp("benign_torch")
    convnet = tiny_models["convnet"]
    convnet(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    objects: dict[str, object] = {f"{name}_sd": m.state_dict() for name, m in tiny_models.items()}
    objects.update(
        {f"{name}_half": {k: v.half() for k, v in m.state_dict().items()} for name, m in tiny_models.items()}
    )
    objects.update({f"trainer_{k}": v for k, v in trainer_states(convnet).items()})
    objects["open_clip_trainer"] = trainer_states(tiny_models["open_clip"])["adamw"]
    zoo = tensor_zoo()
    objects["zoo"] = zoo
    paths = []
    for name, obj in objects.items():
        paths.append(out / f"{name}.pt")
        torch.save(obj, paths[-1])
        legacy = obj
        if name == "zoo":  # dtypes without a legacy storage class cannot round-trip through the legacy format
            legacy = {k: v for k, v in zoo.items() if not k.startswith(("dtype_uint", "dtype_float8"))}
        paths.append(out / f"{name}_legacy.pt")
        torch.save(legacy, paths[-1], _use_new_zipfile_serialization=False)
    for protocol in range(2, 6):  # pickle.dumps of tensors nests a legacy torch.save of each storage
        paths.append(out / f"pickled_p{protocol}.pkl")
        paths[-1].write_bytes(pickle.dumps({"w": torch.ones(3, 2), "b": torch.zeros(2)}, protocol=protocol))
    return paths


def test_torch_save_files_are_clean(torch_files: list[Path]) -> None:
    assert len(torch_files) > 20
    for path in torch_files:
        if path.suffix == ".pkl":  # trusted: written just above; proves they load
            pickle.loads(path.read_bytes())
        else:
            torch.load(path, weights_only=False)
        assert_clean(path)


# --------------------------------------------------------------------------------------------------------------
# transformers: Trainer checkpoint, save_pretrained
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hf_folders(
    tiny_models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    pytest.importorskip("accelerate")  # transformers' TrainingArguments needs it
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Seq2SeqTrainingArguments,
        Trainer,
        TrainingArguments,
    )

    out = tmp_path_factory.mktemp("benign_hf")
    folders = []
    for safe in (True, False):
        folders.append(out / f"clip_safe_{safe}")
        tiny_models["hf_clip"].save_pretrained(folders[-1], safe_serialization=safe)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    model = BertForSequenceClassification(config)
    data = [{"input_ids": torch.tensor([1, 2, 3, 4]), "labels": torch.tensor(i % 2)} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=2, save_steps=1, per_device_train_batch_size=2,
        report_to=[], use_cpu=True, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=data).train()
    checkpoints = sorted((out / "trainer").glob("checkpoint-*"))
    assert checkpoints and (checkpoints[-1] / "training_args.bin").exists()
    assert (checkpoints[-1] / "optimizer.pt").exists() and (checkpoints[-1] / "rng_state.pth").exists()
    folders.extend(checkpoints)
    seq2seq = out / "seq2seq"
    seq2seq.mkdir()
    (seq2seq / "config.json").write_text("{}")
    model.save_pretrained(seq2seq)
    torch.save(Seq2SeqTrainingArguments(output_dir=str(seq2seq), report_to=[]), seq2seq / "training_args.bin")
    folders.append(seq2seq)
    return folders


def test_hf_folders_and_every_file_in_them_are_clean(hf_folders: list[Path]) -> None:
    for folder in hf_folders:
        assert_clean(folder)
        for path in every_file(folder):
            if path.suffix in (".bin", ".pt", ".pth", ".safetensors"):
                assert_clean(path)


# --------------------------------------------------------------------------------------------------------------
# open_clip, timm
# --------------------------------------------------------------------------------------------------------------


def test_open_clip_save_for_hf_is_clean(tiny_models: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    import importlib

    import open_clip

    hub = importlib.import_module("open_clip.push_to_hf_hub")

    class NoTokenizer:  # save_for_hf saves the tokenizer too; the weights are what matters here
        def save_pretrained(self, directory: object) -> None:
            pass

    cfg = open_clip.get_model_config("ckptlint-tiny-ViT")
    hub.save_for_hf(
        tiny_models["open_clip"], NoTokenizer(), cfg, str(tmp_path / "hub"), safe_serialization="both"
    )
    assert_clean(tmp_path / "hub")
    for path in every_file(tmp_path / "hub"):
        if path.suffix != ".json":
            assert_clean(path)


def test_timm_checkpoint_saver_and_save_for_hf_are_clean(
    tiny_models: dict[str, torch.nn.Module], tmp_path: Path
) -> None:
    import importlib

    from timm.utils import CheckpointSaver, ModelEmaV3, NativeScaler

    model = tiny_models["timm"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _step(model, opt)
    args = argparse.Namespace(model="vit_base_patch16_clip_224", lr=1e-3, epochs=2, amp=False, data_dir=None)
    saver = CheckpointSaver(
        model, opt, args=args, model_ema=ModelEmaV3(model), amp_scaler=NativeScaler(), checkpoint_dir=str(tmp_path),
        recovery_dir=str(tmp_path), max_history=2,
    )  # fmt: skip
    saver.save_checkpoint(epoch=0, metric=0.5)
    saver.save_recovery(epoch=0, batch_idx=3)
    importlib.import_module("timm.models._hub").save_for_hf(
        model, str(tmp_path / "hf"), safe_serialization="both"
    )
    files = every_file(tmp_path)
    assert any(p.name.endswith(".pth.tar") for p in files) and any(p.suffix == ".bin" for p in files)
    for path in files:
        if path.suffix != ".json":
            assert_clean(path)
    assert_clean(tmp_path / "hf")


# --------------------------------------------------------------------------------------------------------------
# flax, numpy, safetensors
# --------------------------------------------------------------------------------------------------------------


def test_flax_msgpack_is_clean(tmp_path: Path) -> None:
    import jax
    import optax
    from flax import linen as nn
    from flax import serialization

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            return nn.Dense(3)(nn.LayerNorm()(nn.Dense(4)(x)))

    params = Tiny().init(jax.random.PRNGKey(0), np.zeros((1, 2), np.float32))
    opt_state = optax.adam(1e-3).init(params)
    for name, tree in {
        "params": params,
        "bf16": jax.tree_util.tree_map(lambda a: a.astype(jax.numpy.bfloat16), params),
        "train_state": {"params": params, "opt_state": serialization.to_state_dict(opt_state), "step": 3},
    }.items():
        path = tmp_path / f"{name}.msgpack"
        path.write_bytes(serialization.to_bytes(tree))
        assert_clean(path)


def test_numpy_files_are_clean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "params/w": rng.standard_normal((4, 3)).astype(np.float32),
        "params/b16": rng.standard_normal(3).astype(ml_dtypes.bfloat16).view("V2"),  # big_vision's bf16
        "opt/mu": np.zeros(5, np.float16),
        "chrono/step": np.array(3, np.int64),
    }
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez_compressed(tmp_path / "compressed.npz", **arrays)
    np.save(tmp_path / "one.npy", arrays["params/w"])
    np.save(tmp_path / "tree.npy", {"w": arrays["params/w"], "step": 3}, allow_pickle=True)  # a pickled dict
    for protocol in range(6):
        (tmp_path / f"arrays_p{protocol}.pkl").write_bytes(pickle.dumps(arrays, protocol=protocol))
    for path in every_file(tmp_path):
        assert_clean(path)


class _Unseekable(io.RawIOBase):
    """A write-only stream: joblib writes its arrays without alignment padding then."""

    def __init__(self, fh: io.BufferedWriter) -> None:
        self.fh = fh

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.fh.write(data)

    def tell(self) -> int:
        raise io.UnsupportedOperation("unseekable")


def test_joblib_files_are_clean(tmp_path: Path) -> None:
    """joblib.dump: arrays inline (aligned, and unaligned when written to a stream), object arrays, compressed."""
    import joblib

    rng = np.random.default_rng(0)
    tree = {
        "coef": rng.standard_normal((4, 3)),
        "classes": np.array(["a", "b"], dtype=object),
        "ids": np.arange(7, dtype=np.int32),
        "nested": {"scale": np.float64(0.5), "mask": np.ones(5, bool), "names": ["x", "y"]},
        "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2)).astype(np.float32)),
    }
    joblib.dump(tree, tmp_path / "plain.joblib")
    for compress in (3, ("gzip", 3), ("bz2", 3), ("lzma", 3)):
        name = compress[0] if isinstance(compress, tuple) else "zlib"
        joblib.dump(tree, tmp_path / f"{name}.joblib", compress=compress)
    with open(tmp_path / "stream.joblib", "wb") as fh:
        joblib.dump(tree, _Unseekable(fh))
    joblib.dump([rng.standard_normal(3) for _ in range(3)], tmp_path / "model.pkl", protocol=2)
    for path in every_file(tmp_path):
        joblib.load(path)  # the files are what joblib reads back
        assert_clean(path)


def test_safetensors_files_are_clean(tiny_models: dict[str, torch.nn.Module], tmp_path: Path) -> None:
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    save_torch(tiny_models["timm"].state_dict(), str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    save_numpy({"a": np.ones((2, 2), np.float32)}, str(tmp_path / "n.safetensors"))
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buf)
    for path in every_file(tmp_path):
        assert_clean(path)


# --------------------------------------------------------------------------------------------------------------
# the polyglot probe (files of other formats are walked as pickles too) must not misfire on genuine files
# --------------------------------------------------------------------------------------------------------------


def _safetensors_with_first_byte(first: int, indent: int | None) -> bytes:
    """A genuine safetensors file whose header length's low byte (the file's first byte) is ``first``."""
    import json
    import struct

    note = "c\nos\nsystem\n"  # lines that read as GLOBAL os.system if walked raw (JSON escapes them)
    header = {"__metadata__": {"note": note}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    text = json.dumps(header, indent=indent).encode()
    text += b" " * ((first - len(text)) % 256)
    return struct.pack("<Q", len(text)) + text + b"\0" * 16


@pytest.mark.parametrize("indent", [None, 1])
def test_safetensors_starting_like_a_pickle_are_clean(tmp_path: Path, indent: int | None) -> None:
    """Every low byte of the header length that starts a pickle stream (MARK, GLOBAL, BININT1, SHORT_BINSTRING,
    PROTO, FRAME...), with compact and pretty-printed headers: still read as safetensors, nothing flagged."""
    from safetensors import safe_open

    from ckptlint.readers.sniff import _STREAM_FIRST

    for first in sorted(_STREAM_FIRST):
        path = tmp_path / f"first_{first:02x}.safetensors"
        path.write_bytes(_safetensors_with_first_byte(first, indent))
        assert path.read_bytes()[0] == first
        with safe_open(str(path), "np") as f:  # a genuine file for the library itself
            assert list(f.keys()) == ["w"]
        (file,) = check(str(path)).files
        assert file.format == "safetensors", (first, file.error)
        assert_clean(path)


def test_flax_files_whose_first_byte_is_a_pickle_opcode_are_clean(tmp_path: Path) -> None:
    """flax state dicts of 8 to 15 top-level keys start with fixmap bytes 0x88-0x8f (NEWTRUE, LONG1, ...)."""
    from flax import serialization

    for n in range(1, 16):
        path = tmp_path / f"keys_{n}.msgpack"
        path.write_bytes(
            serialization.to_bytes({f"layer_{i}": {"kernel": np.ones((2, 2), np.float32)} for i in range(n)})
        )
        (file,) = check(str(path)).files
        assert file.format == "flax-msgpack", (n, file.error)
        assert_clean(path)
