"""Canonical dtype names (numpy / ml_dtypes spelling) and item sizes, without importing numpy.

Every reader maps its format's own dtype spelling to these names so that nothing downstream
sees format-specific dtype strings.
"""

from __future__ import annotations

# canonical name -> bytes per element (sub-byte types round up per element; nbytes uses ITEM_BITS)
ITEM_BITS: dict[str, int] = {
    "bool": 8,
    "uint8": 8,
    "int8": 8,
    "uint16": 16,
    "int16": 16,
    "uint32": 32,
    "int32": 32,
    "uint64": 64,
    "int64": 64,
    "float16": 16,
    "bfloat16": 16,
    "float32": 32,
    "float64": 64,
    "complex64": 64,
    "complex128": 128,
    "float8_e4m3fn": 8,
    "float8_e5m2": 8,
    "float8_e4m3fnuz": 8,
    "float8_e5m2fnuz": 8,
    "float8_e8m0fnu": 8,
    "float4_e2m1fn": 4,
    "float6_e2m3fn": 6,
    "float6_e3m2fn": 6,
    "int4": 4,
    "uint4": 4,
}

# safetensors header dtype strings
SAFETENSORS: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1fn",
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
}

# torch storage classes (``torch.FloatStorage`` ...) and torch dtype attribute names (``torch.float32``)
TORCH_STORAGE: dict[str, str] = {
    "BoolStorage": "bool",
    "ByteStorage": "uint8",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QUInt8Storage": "uint8",
    "QInt8Storage": "int8",
    "QInt32Storage": "int32",
}

TORCH_DTYPE: dict[str, str] = {
    "bool": "bool",
    "uint8": "uint8",
    "int8": "int8",
    "int16": "int16",
    "short": "int16",
    "int32": "int32",
    "int": "int32",
    "int64": "int64",
    "long": "int64",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "complex64": "complex64",
    "cfloat": "complex64",
    "complex128": "complex128",
    "cdouble": "complex128",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
}

# numpy array-protocol type strings without byte order (``f4`` from ``<f4``) -> canonical name.
# ``V2`` is how numpy (and big_vision's np.savez) stores bfloat16: raw 2-byte void.
NUMPY_TYPESTR: dict[str, str] = {
    "b1": "bool",
    "u1": "uint8",
    "i1": "int8",
    "u2": "uint16",
    "i2": "int16",
    "u4": "uint32",
    "i4": "int32",
    "u8": "uint64",
    "i8": "int64",
    "f2": "float16",
    "f4": "float32",
    "f8": "float64",
    "c8": "complex64",
    "c16": "complex128",
    "V2": "bfloat16",
}

# numpy dtype kind letters -> name stem for dtypes with no canonical name above (kind ``f``, 2 bytes -> float16)
NUMPY_KIND_NAMES: dict[str, str] = {
    "b": "bool",
    "i": "int",
    "u": "uint",
    "f": "float",
    "c": "complex",
    "V": "void",
    "S": "bytes",
    "a": "bytes",
}


def nbytes_for(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes that ``shape`` elements of ``dtype`` take (0 bits per element when the dtype is unknown)."""
    n = 1
    for d in shape:
        n *= d
    bits = ITEM_BITS.get(dtype, 0)
    return (n * bits + 7) // 8
