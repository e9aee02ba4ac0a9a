"""Images and artifacts: files stored inside the run, referenced from a record."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

from ..errors import UnsupportedValueError


def key_dirname(name: str) -> str:
    """A filesystem-safe, collision-free folder name for any key name."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60].strip("._") or "key"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _png_from_array(array: Any) -> tuple[bytes, int, int]:
    """Encode an HxW, HxWx1, HxWx3 or HxWx4 array (uint8 or floats in [0, 1]) as PNG."""
    import numpy as np  # the caller passed a numpy array, so numpy is already loaded

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW (torch layout) -> HWC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UnsupportedValueError(f"an image must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.nan_to_num(arr.astype(np.float64))
        if arr.max(initial=0) > 1.0:  # already 0..255 values
            arr = arr / 255.0
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    height, width = arr.shape[:2]
    color_type = {2: 0, 3: 2 if arr.ndim == 3 and arr.shape[2] == 3 else 6}[arr.ndim]
    if arr.ndim == 3 and arr.shape[2] == 4:
        color_type = 6
    rows = arr.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return png, width, height


def _encoded_image(data: bytes) -> tuple[bytes, str, int | None, int | None]:
    """Already-encoded PNG / GIF / JPEG / WebP bytes, recognised by their signature."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return data, "png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return data, "gif", width, height
    if data.startswith(b"\xff\xd8\xff"):
        return data, "jpg", None, None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return data, "webp", None, None
    raise UnsupportedValueError("image bytes are not PNG, GIF, JPEG or WebP (unknown "
                                "signature); pass the encoded file's bytes or an array")


def image_bytes(image: Any) -> tuple[bytes, str, int | None, int | None]:
    """(file bytes, extension, width, height) for a supported image object."""
    module = type(image).__module__
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _encoded_image(bytes(image))
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise UnsupportedValueError(f"image file not found: {path}")
        return path.read_bytes(), path.suffix.lstrip(".").lower() or "bin", None, None
    if module.startswith("PIL."):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue(), "png", image.width, image.height
    if module.startswith("matplotlib.") and hasattr(image, "savefig"):
        out = io.BytesIO()
        image.savefig(out, format="png", bbox_inches="tight")
        width, height = (int(v) for v in image.get_size_inches() * image.dpi)
        return out.getvalue(), "png", width, height
    if module.startswith("torch"):
        image = image.detach().cpu().numpy()
        module = "numpy"
    if module.startswith("numpy") or hasattr(image, "__array__"):
        png, width, height = _png_from_array(image)
        return png, "png", width, height
    raise UnsupportedValueError(
        f"cannot log image of type {module}.{type(image).__name__}; pass a numpy array, "
        "torch tensor, PIL image, matplotlib figure, encoded PNG/GIF/JPEG bytes or a path")


def save_image(run_dir: Path, name: str, image: Any, step: int) -> dict[str, Any]:
    """Write the image under media/ and return the record that points to it."""
    data, ext, width, height = image_bytes(image)
    rel = Path("media") / key_dirname(name) / f"{step}.{ext}"
    target = run_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {"$media": "image", "path": rel.as_posix(), "width": width, "height": height,
            "bytes": len(data)}


def save_artifact(run_dir: Path, name: str, source: Path, step: int) -> dict[str, Any]:
    """Copy a file or folder under artifacts/ and return the record that points to it."""
    if not source.exists():
        raise FileNotFoundError(f"artifact {name!r}: {source} does not exist")
    rel = Path("artifacts") / key_dirname(name) / str(step) / source.name
    target = run_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    else:
        shutil.copy2(source, target)
        size = target.stat().st_size
    return {"$media": "artifact", "path": rel.as_posix(), "bytes": size,
            "dir": source.is_dir()}
