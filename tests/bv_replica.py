"""A minimal flax re-creation of big_vision's ViT (models/vit.py) and CLIPPO one_tower
(models/proj/clippo/one_tower.py).

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

    @nn.compact
    def __call__(self, x: Any) -> Any:
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
        y = nn.LayerNorm()(x)
        return x + MlpBlock(self.mlp_dim)(y)


class Encoder(nn.Module):
    depth: int
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
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

    @nn.compact
    def __call__(self, image: Any) -> Any:
        p = self.patch
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", name="embedding")(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c), x.dtype)
        x = Encoder(self.depth, self.mlp_dim, self.num_heads, name="Transformer")(x)
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


class TextTransformer(nn.Module):
    """big_vision models/proj/image_text/text_transformer.py _Model with pool_type='last': nn.Embed (auto-named
    Embed_0), a learned pos_embedding (1, L, width), vit.Encoder (auto-named Encoder_0), a head of num_classes."""

    num_classes: int
    width: int = 512
    depth: int = 12
    mlp_dim: int = 2048
    num_heads: int = 8
    vocab_size: int = 32000

    @nn.compact
    def __call__(self, text: Any) -> Any:
        x = nn.Embed(num_embeddings=self.vocab_size, features=self.width)(text)
        _, length, d = x.shape
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, length, d), x.dtype)
        x = Encoder(self.depth, self.mlp_dim, self.num_heads)(x)[:, -1, :]
        return nn.Dense(self.num_classes, name="head")(x) if self.num_classes else x


class TwoTowers(nn.Module):
    """big_vision proj.image_text.two_towers: the text model named ``txt``, the ViT named ``img``, the temperature
    ``t`` and (SigLIP: bias_init set) the bias ``b``. Either input may be None, as in two_towers.py."""

    vit: dict[str, int]
    text: dict[str, int]
    bias: bool = True

    @nn.compact
    def __call__(self, image: Any, text: Any = None) -> Any:
        ztxt = TextTransformer(**self.text, name="txt")(text) if text is not None else None
        zimg = ViT(**self.vit, name="img")(image) if image is not None else None
        t = self.param("t", lambda _, s: jnp.log(10.0) * jnp.ones(s, jnp.float32), (1,))
        b = self.param("b", lambda _, s: -10.0 * jnp.ones(s, jnp.float32), (1,)) if self.bias else None
        return zimg, ztxt, t, b


TINY = {"num_classes": 32, "patch": 8, "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}


def image(size: int = 32) -> Any:
    return jnp.zeros((1, size, size, 3), jnp.float32)


def param_shapes(model: nn.Module, *inputs: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``path -> (shape, dtype)`` of the model's ``params`` collection, built without allocating
    (eval_shape)."""
    tree = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in flatten_dict(tree, sep="/").items()}


def tokens(length: int = 64) -> Any:
    return jnp.zeros((1, length), jnp.int32)
