"""A minimal flax re-creation of big_vision's ViT (models/vit.py), CLIPPO one_tower
(models/proj/clippo/one_tower.py) and SigLIP two towers (models/proj/image_text/two_towers.py with
text_transformer.py).

Only the module names and parameter shapes matter here: they decide the parameter tree and flax's scope
errors. The tests assert that ``jax.eval_shape`` of these modules gives exactly the trees of the real
big_vision files in the corpus (tiny_vit.npz, tiny_clippo.npz's params), so the replica is checked against
big_vision itself before it serves as the oracle for missing/unexpected keys and ``ScopeParamNotFoundError``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict


class MlpBlock(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        d = x.shape[-1]
        x = nn.gelu(nn.Dense(self.mlp_dim)(x))
        return nn.Dense(d)(x)


class Encoder1DBlock(nn.Module):
    mlp_dim: int
    num_heads: int
    scanned: bool = False  # under nn.scan: (carry, unused) in, (carry, None) out

    @nn.compact
    def __call__(self, x: Any, unused: Any = None) -> Any:
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
        y = nn.LayerNorm()(x)
        x = x + MlpBlock(self.mlp_dim)(y)
        return (x, None) if self.scanned else x


class Encoder(nn.Module):
    """big_vision vit.Encoder; ``scan``: the blocks as one ``nn.scan`` module ``encoderblock`` whose parameters
    have a leading axis of depth (``variable_axes={"params": 0}``), as big_vision's scan=True saves them."""

    depth: int
    mlp_dim: int
    num_heads: int
    scan: bool = False

    @nn.compact
    def __call__(self, x: Any) -> Any:
        if self.scan:
            blocks = nn.scan(
                Encoder1DBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=nn.broadcast,
                length=self.depth,
            )(self.mlp_dim, self.num_heads, scanned=True, name="encoderblock")
            x, _ = blocks(x, None)
        else:
            for i in range(self.depth):
                x = Encoder1DBlock(self.mlp_dim, self.num_heads, name=f"encoderblock_{i}")(x)
        return nn.LayerNorm(name="encoder_norm")(x)


class MAPHead(nn.Module):
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        n, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype)
        x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(jnp.tile(probe, [n, 1, 1]), x)
        y = nn.LayerNorm()(x)
        return (x + MlpBlock(self.mlp_dim)(y))[:, 0]


class ViT(nn.Module):
    """big_vision models.vit with pool_type='map', posemb='learn', a head of num_classes."""

    num_classes: int = 32
    patch: int = 8
    width: int = 32
    depth: int = 2
    mlp_dim: int = 64
    num_heads: int = 2
    scan: bool = False

    @nn.compact
    def __call__(self, image: Any) -> Any:
        p = self.patch
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding")(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c), x.dtype)
        x = Encoder(self.depth, self.mlp_dim, self.num_heads, self.scan, name="Transformer")(x)
        x = MAPHead(self.mlp_dim, self.num_heads)(x)
        return nn.Dense(self.num_classes, name="head")(x) if self.num_classes else x


class OneTower(nn.Module):
    """CLIPPO: one ViT named ``img`` applied to images and rendered text, plus the temperature ``t``."""

    vit: dict[str, int]

    @nn.compact
    def __call__(self, image: Any, text: Any) -> Any:
        model = ViT(**self.vit, name="img")
        zimg, ztxt = model(image), model(text)  # as one_tower.py: the towers run before t is created
        t = self.param("t", lambda _, s: jnp.log(10.0) * jnp.ones(s, jnp.float32), (1,))
        return zimg, ztxt, t


TINY = {"num_classes": 32, "patch": 8, "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}


def image(size: int = 32) -> Any:
    return jnp.zeros((1, size, size, 3), jnp.float32)


def param_shapes(model: nn.Module, *inputs: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``path -> (shape, dtype)`` of the model's ``params`` collection, built without allocating
    (eval_shape)."""
    tree = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in flatten_dict(tree, sep="/").items()}


class TextTransformer(nn.Module):
    """big_vision proj.image_text.text_transformer with pool_type='last': embed, learned posemb, the ViT encoder
    (no causal mask), the last token, a head of num_classes."""

    num_classes: int = 64
    width: int = 32
    depth: int = 2
    mlp_dim: int = 64
    num_heads: int = 2
    vocab_size: int = 100
    scan: bool = False

    @nn.compact
    def __call__(self, text: Any) -> Any:
        x = nn.Embed(num_embeddings=self.vocab_size, features=self.width)(text)
        _, length, d = x.shape
        x = x + self.param("pos_embedding", nn.initializers.normal(d**-0.5), (1, length, d), x.dtype)
        x = Encoder(self.depth, self.mlp_dim, self.num_heads, self.scan)(x)
        x = x[:, -1, :]
        return nn.Dense(self.num_classes, name="head")(x) if self.num_classes else x


class TwoTowers(nn.Module):
    """SigLIP: text tower ``txt`` (run first, as two_towers.py), image tower ``img`` (MAP head, no head of its own),
    temperature ``t`` and bias ``b``; returns the raw and the normalised embeddings and t, b."""

    img: dict[str, int]
    txt: dict[str, int]

    @nn.compact
    def __call__(self, image: Any, text: Any) -> Any:
        ztxt = TextTransformer(**self.txt, name="txt")(text)
        zimg = ViT(**self.img, name="img")(image)
        t = self.param("t", lambda _, s: jnp.log(7.0) * jnp.ones(s, jnp.float32), (1,))
        b = self.param("b", lambda _, s: -3.0 * jnp.ones(s, jnp.float32), (1,))
        norm_img = zimg / (jnp.linalg.norm(zimg, axis=1, keepdims=True) + 1e-8)
        norm_txt = ztxt / (jnp.linalg.norm(ztxt, axis=1, keepdims=True) + 1e-8)
        return zimg, ztxt, norm_img, norm_txt, t, b


SIGLIP_TINY = {
    "img": {"num_classes": 0, "patch": 8, "width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 2},
    "txt": {"num_classes": 64, "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2, "vocab_size": 100},
}
