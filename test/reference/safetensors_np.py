"""A minimal safetensors reader and writer on numpy alone.

The reference must not depend on the `safetensors` package (nothing from PyPI on this box), and the format is small
enough to implement completely: 8 bytes of little-endian u64 header length, a JSON header mapping each tensor name to
{dtype, shape, data_offsets} (offsets relative to the end of the header) plus an optional "__metadata__" map of
string to string, then the raw little-endian bytes.
"""

import json
import os
import struct

import numpy as np

# dtype name -> (numpy dtype of the stored bytes, bytes per element)
_STORED = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # no numpy bfloat16: read the raw 16 bits and widen them by hand
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
}


def _decode(dtype, raw, shape, name):
    if dtype not in _STORED:
        raise ValueError(f"safetensors: tensor {name!r} has unsupported dtype {dtype}")
    np_dtype, size = _STORED[dtype]
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if len(raw) != count * size:
        raise ValueError(f"safetensors: tensor {name!r} holds {len(raw)} bytes, expected {count * size} for {dtype}{shape}")
    arr = np.frombuffer(raw, dtype=np_dtype, count=count)
    if dtype == "BF16":
        # bfloat16 is the top half of a float32: shifting the bits up 16 places is an exact widening.
        arr = (arr.astype(np.uint32) << 16).view("<f4")
    elif dtype in ("F16",):
        arr = arr.astype(np.float32)  # exact: every float16 is a float32
    # np.array copies, so the result is writable and owns its memory (torch.from_numpy warns on read-only buffers).
    return np.array(arr.reshape(shape))


def read_safetensors(path):
    """Returns (tensors, metadata): tensors maps name -> numpy array (floats widened to at least float32)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"safetensors: {path} is too short to hold a header")
        (n,) = struct.unpack("<Q", head)
        header_bytes = f.read(n)
        if len(header_bytes) != n:
            raise ValueError(f"safetensors: {path} header is truncated")
        header = json.loads(header_bytes.decode("utf-8"))
        data = f.read()
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if not (0 <= begin <= end <= len(data)):
            raise ValueError(f"safetensors: tensor {name!r} offsets {begin}..{end} exceed the {len(data)} data bytes")
        tensors[name] = _decode(info["dtype"], data[begin:end], list(info["shape"]), name)
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes every tensor as F32 (the format the TS side reads and writes for adapters).

    `metadata` values must be strings, as the format requires. The file is written under a temporary name and
    renamed, so a reader never sees half a file.
    """
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("safetensors: __metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(np.asarray(tensors[name], dtype="<f4"))
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)
