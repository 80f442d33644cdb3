"""CK301 — pickle imports a global outside the safe set

What it does
    Passes through what the pickle walker found while reading a torch or pickle file opcode by opcode: a
    ``GLOBAL``/``STACK_GLOBAL``/``INST`` target that is not one of the few globals real checkpoints need
    (torch tensor/storage rebuilders and dtypes, ``collections.OrderedDict``, numpy array reconstruction, a
    few data builtins). ckptlint never imports or calls it; the finding names the global and where it is.

Why is this bad?
    Unpickling calls such globals: ``torch.load(weights_only=False)``, ``pickle.load`` or
    ``np.load(allow_pickle=True)`` on this file would run code chosen by whoever wrote it (``os.system``,
    ``builtins.exec``, ``subprocess.Popen``…). ``torch.load``'s default ``weights_only=True`` refuses it, but
    many loaders and older torch versions do not.

Example
    $ ckptlint check suspicious.pt    # a dict holding an object that reduces to os.system
    CK301 error    pickle imports posix.system, a dangerous global (runs system commands), in
                   suspicious/data.pkl at offset 182
                   cause: Unpickling this file imports posix.system and calls it: loading the file runs code
                   on your machine.
                   fix: Do not load this file with pickle.load, torch.load(weights_only=False) or
                   np.load(allow_pickle=True). If you trust its source, load it with
                   torch.load(weights_only=True) (which refuses unknown globals) and re-save the tensors as
                   safetensors; otherwise discard the file.

Fix
    Do not load the file with an unrestricted unpickler. Get the weights as safetensors from a source you
    trust, or — if you wrote the file yourself and the global is harmless — re-save only the state_dict
    (``torch.save(model.state_dict(), …)`` or ``safetensors.torch.save_file``).

Links
    https://pytorch.org/docs/stable/generated/torch.load.html (weights_only),
    https://huggingface.co/docs/hub/security-pickle
"""

from __future__ import annotations

from ckptlint.findings import Finding
from ckptlint.rules._context import Context
from ckptlint.rules.base import Rule, Stage, rule


@rule(
    "CK301",
    "error",
    "pickle imports a global outside the safe set (would run code when loaded)",
    stage=Stage.FACTS,
    order=1,
    rank=0,
)
class UnsafePickleRule(Rule):
    """Reader finding, passed through."""

    needs = "none"

    def check(self, ctx: Context) -> list[Finding]:
        return [f for f in ctx.ckpt.findings if f.code == self.code]
