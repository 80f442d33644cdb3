"""``ckptlint convert``: one architecture's checkpoint into another's layout, from the family files' tables.

Module map: ``tables`` (conversion rows read one way, the write plan they make), ``declare`` (the config files an
architecture reads and writes: ``[declarations.ARCH]``), ``plan`` (a whole conversion planned from headers: table,
parameters and where each came from — CK104 uses it to name a command that works), ``run`` (write OUT atomically
and check it), ``listing`` (``convert --list``). Nothing is imported here, so the rules may import ``plan`` alone.
"""
