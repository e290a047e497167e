"""jetson_utils' CUDA image routines on numpy: ``cudaImage``, ``cudaAllocMapped``, ``cudaMemcpy``,
``cudaConvertColor``, ``cudaResize``, ``cudaCrop``, ``cudaNormalize``, ``cudaOverlay`` and
``cudaDrawCircle`` / ``cudaDrawLine`` / ``cudaDrawRect``, with jetson's signatures and semantics.

Images live in host memory: a ``cudaImage`` is a numpy array shaped ``(height, width, channels)``
(jetson's ``shape``), so the Python blocks of jetson-inference's docs/aux-image.md run unchanged and
the memory is shared with numpy as on a Jetson's mapped (ZeroCopy) memory. Formats: ``rgb8``,
``rgba8``, ``rgb32f``, ``rgba32f``, their ``bgr`` twins, ``gray8`` and ``gray32f``; float images hold
0..255 like jetson's. Jetson's camera-internal YUV and Bayer formats are not kept as images here
(imgclass's sources decode to RGB), so asking for one is a clear error.

Where there is a CUDA device, ``img.__cuda_array_interface__`` hands the same memory to CuPy, Numba,
PyTorch or PyCUDA: it is registered with CUDA as mapped (page-locked, zero-copy) memory, as jetson's
``cudaAllocMapped`` memory is. Without one the attribute is absent, with a message saying why.

Example:
    >>> img = cudaImage(width=4, height=2, format="rgba32f")
    >>> img.shape, img.format
    ((2, 4, 4), 'rgba32f')
"""
from __future__ import annotations

import weakref
from typing import Sequence

import cv2
import numpy as np

from ..errors import ImgclassError

__all__ = ["cudaImage", "cudaAllocMapped", "cudaMemcpy", "cudaFromNumpy", "cudaToNumpy", "cudaConvertColor",
           "cudaResize", "cudaCrop", "cudaNormalize", "cudaOverlay", "cudaDrawCircle", "cudaDrawLine", "cudaDrawRect",
           "cudaDeviceSynchronize"]

# format -> (channel order, channels, dtype)
FORMATS: dict[str, tuple[str, int, type]] = {
    f"{order}{'a' if alpha else ''}{depth}": (order, 3 + alpha, dtype)
    for order in ("rgb", "bgr") for alpha in (0, 1) for depth, dtype in (("8", np.uint8), ("32f", np.float32))
} | {"gray8": ("gray", 1, np.uint8), "gray32f": ("gray", 1, np.float32)}
_CAMERA_FORMATS = ("yuyv", "yuy2", "yvyu", "uyvy", "i420", "yv12", "nv12", "bayer-bggr", "bayer-gbrg", "bayer-grbg",
                   "bayer-rggb")
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
# jetson's cudaFilterMode names, and the numbers its enum gives them (OpenCV's INTER_* values)
_FILTERS = {"point": cv2.INTER_NEAREST, "nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
            "bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
            "lanczos4": cv2.INTER_LANCZOS4}


def layout(format: str) -> tuple[str, int, type]:
    """(channel order, channels, dtype) of a jetson format string; raises on one imgclass does not hold."""
    found = FORMATS.get(str(format).lower())
    if found is not None:
        return found
    if str(format).lower() in _CAMERA_FORMATS:
        raise ImgclassError(f"image format '{format}': jetson's camera-internal YUV/Bayer formats are not kept as images "
                            f"in imgclass (its sources decode to RGB); use one of {', '.join(FORMATS)}")
    raise ImgclassError(f"image format '{format}' is unknown; use one of {', '.join(FORMATS)}")


class cudaImage(np.ndarray):
    """jetson's ``cudaImage``: ``cudaImage(width, height, format='rgb8')`` or ``cudaImage(like=img)``
    allocates a zeroed image; it is a numpy array ``(height, width, channels)`` that also answers to
    ``width``, ``height``, ``channels``, ``format``, ``timestamp``, ``ptr`` and ``mapped``.

    Indexing is jetson's: ``img[y, x]`` a pixel, ``img[y, x, c]`` a channel, ``img[y * img.width + x]`` a
    pixel by flat index (a plain int never picks a row, unlike numpy). numpy's own functions read it
    directly (jetson's ``__array__`` interface) and return plain arrays; ``cudaToNumpy(img)`` is an
    ordinary array over the same memory. ``size`` stays numpy's element count (jetson's is in bytes:
    use ``nbytes``).
    """

    def __new__(cls, width: float = 0, height: float = 0, format: str = "rgb8", timestamp: int = 0,
                mapped: bool = True, freeOnDelete: bool = True, ptr: int | None = None, like=None) -> "cudaImage":
        if ptr is not None:
            raise ImgclassError("cudaImage(ptr=...): imgclass images live in host memory, not at a device address; "
                                "wrap an array with cudaFromNumpy(array) instead")
        if like is not None:
            like = as_image(like, "cudaImage(like=...)")
            width, height, format = like.width, like.height, like.format
        _, channels, dtype = layout(format)
        width, height = int(width), int(height)  # jetson truncates float sizes (cudaAllocMapped(width=w * 0.5))
        if width <= 0 or height <= 0:
            raise ImgclassError(f"cudaImage: width and height must be positive (got {width}x{height})")
        image = np.zeros((height, width, channels), dtype).view(cls)
        image._format, image.timestamp = str(format).lower(), int(timestamp)
        return image

    def __array_finalize__(self, obj) -> None:
        self._format = getattr(obj, "_format", None)
        self.timestamp = getattr(obj, "timestamp", 0)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        # numpy works on the pixels and hands back plain arrays, as with jetson's __array__ interface;
        # in-place operators (img += 1) write the image's own memory and keep it a cudaImage
        inputs = tuple(np.asarray(x) if isinstance(x, cudaImage) else x for x in inputs)
        if out is not None:
            kwargs["out"] = tuple(np.asarray(x) if isinstance(x, cudaImage) else x for x in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return out[0] if out is not None and len(out) == 1 else result

    def __getitem__(self, key):
        item = super().__getitem__(self._pixel_index(key))
        # a pixel, a row or a channel plane is plain numpy data, not an image
        return item.view(np.ndarray) if isinstance(item, cudaImage) and item.ndim != 3 else item

    def __setitem__(self, key, value) -> None:
        super().__setitem__(self._pixel_index(key), value)

    def _pixel_index(self, key):
        """jetson's flat pixel index ``img[y * img.width + x]`` as (y, x); other keys index as numpy's do."""
        if isinstance(key, (int, np.integer)) and self.ndim == 3:
            pixels = self.shape[0] * self.shape[1]
            return divmod(int(key) + pixels if key < 0 else int(key), self.shape[1])
        return key

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[2] if self.ndim == 3 else 1

    @property
    def format(self) -> str:
        """The format its channels and dtype make, in the channel order it was made with (a bgra8 image's
        first three channels are bgr8, as float bgr32f; a numpy array is rgb or gray)."""
        order = FORMATS[self._format][0] if self._format in FORMATS else "rgb"
        candidates = [name for name, layout in FORMATS.items() if layout[0] == order] + list(FORMATS)  # rgb before bgr
        found = next((name for name in candidates if _fits(name, self)), None)
        if found is not None:
            return found
        raise ImgclassError(f"a {self.dtype} array shaped {self.shape} is not an image jetson knows "
                            "(HxWx1, 3 or 4 channels of uint8 or float32)")

    @property
    def ptr(self) -> int:
        return self.ctypes.data

    @property
    def mapped(self) -> bool:
        return True

    @property
    def __cuda_array_interface__(self) -> dict:
        """The image as a CUDA array (CuPy, Numba, PyTorch, PyCUDA take it), over the very memory numpy sees.

        Raises:
            NoDeviceMemory: no CUDA device here, or CUDA refused to map the memory.
        """
        _map_for_cuda(self)
        # registered host memory has the same address on the device (64-bit hosts: unified addressing)
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False),
                "strides": None if self.flags.c_contiguous else self.strides, "version": 3}

    def __str__(self) -> str:
        if self.ndim != 3:  # reshaped by numpy: no longer an image
            return super().__str__()
        return (f"<cudaImage object>\n   -- ptr:      {hex(self.ptr)}\n   -- size:     {self.nbytes}\n"
                f"   -- width:    {self.width}\n   -- height:   {self.height}\n   -- channels: {self.channels}\n"
                f"   -- format:   {self.format}\n   -- timestamp: {self.timestamp / 1e9:f}\n   -- mapped:   true\n")


class NoDeviceMemory(ImgclassError, AttributeError):
    """Why a cudaImage has no ``__cuda_array_interface__``: an AttributeError, so that libraries that look
    for the attribute (torch.as_tensor, CuPy, Numba) take the image as the host array it is."""


_HOST_REGISTER_MAPPED = 0x02  # cudaHostRegisterMapped: page-locked host memory that the GPU reads and writes
# id of each array whose memory is registered with CUDA -> its finalizer, which unregisters it
_registered: dict[int, weakref.finalize] = {}


def _map_for_cuda(image: np.ndarray) -> None:
    """Register the memory under ``image`` with CUDA as mapped memory, once per buffer, until the array
    that holds it is freed (as a Jetson's cudaAllocMapped memory, the GPU then works on numpy's pixels).

    Raises:
        NoDeviceMemory: no CUDA device here, or CUDA refused.
    """
    from ..runtime.select import resolve_device

    if resolve_device("auto") != "cuda":
        raise NoDeviceMemory("cudaImage has no __cuda_array_interface__ here: no CUDA device, and imgclass keeps "
                             "images in host memory; use the image as a numpy array (np.asarray(img) or "
                             "cudaToNumpy(img))")
    holder = image
    while isinstance(holder.base, np.ndarray):  # views share their base's buffer: register it whole, once
        holder = holder.base
    if id(holder) in _registered:
        return
    import torch

    cudart = torch.cuda.cudart()
    error = cudart.cudaHostRegister(holder.ctypes.data, holder.nbytes, _HOST_REGISTER_MAPPED)
    if error != cudart.cudaError.success:
        raise NoDeviceMemory(f"cudaImage.__cuda_array_interface__: CUDA could not map the image's host memory "
                             f"({cudart.cudaGetErrorString(error)}); copy it to the GPU instead "
                             "(torch.from_numpy(np.asarray(img)).cuda())")
    _registered[id(holder)] = weakref.finalize(holder, _unmap, id(holder), holder.ctypes.data)


def _unmap(key: int, address: int) -> None:
    """Unregister freed memory from CUDA (numpy runs this before it frees the buffer)."""
    import torch

    del _registered[key]
    torch.cuda.cudart().cudaHostUnregister(address)


def _fits(format: str, array: np.ndarray) -> bool:
    _, channels, dtype = FORMATS[format]
    return array.ndim == 3 and array.shape[2] == channels and array.dtype == dtype


def wrap(pixels: np.ndarray, format: str | None = None, timestamp: int = 0) -> cudaImage:
    """A cudaImage view of ``pixels`` (no copy); HxW arrays become HxWx1."""
    image = (pixels[..., None] if pixels.ndim == 2 else pixels).view(cudaImage)
    image._format, image.timestamp = format, timestamp
    return image


def as_image(obj, what: str) -> cudaImage:
    """``obj`` as a cudaImage (a view for numpy arrays); one clear error for anything else."""
    if isinstance(obj, cudaImage):
        return obj
    if isinstance(obj, np.ndarray) and obj.ndim in (2, 3):
        return wrap(obj)
    raise ImgclassError(f"{what}: expected a cudaImage (or an HxWxC numpy array), got {type(obj).__name__}")


def cudaAllocMapped(size: int = 0, width: float = 0, height: float = 0, format: str = "rgb8", timestamp: int = 0):
    """``cudaAllocMapped(width=, height=, format=)``: a zeroed image; ``cudaAllocMapped(size=N)``: N zeroed bytes."""
    if width > 0 and height > 0:
        return cudaImage(width, height, format, timestamp)
    if size > 0:
        return np.zeros(int(size), np.uint8)
    raise ImgclassError("cudaAllocMapped(): give width= and height= (and format=), or size= in bytes")


def cudaMemcpy(dst, src=None):
    """``cudaMemcpy(dst, src)`` copies an image into one of the same size and format;
    ``cudaMemcpy(src)`` returns a new copy."""
    if src is None:
        src = as_image(dst, "cudaMemcpy(src)")
        return wrap(np.array(src), src.format, src.timestamp)
    dst, src = as_image(dst, "cudaMemcpy(dst)"), as_image(src, "cudaMemcpy(src)")
    _same_size_and_format("cudaMemcpy", src, dst)
    np.copyto(dst, src)
    dst.timestamp = src.timestamp
    return None


def cudaFromNumpy(array, isBGR: bool = False, timestamp: int = 0) -> cudaImage:
    """A copy of a numpy image (HxW, HxWx1, 3 or 4; uint8, or float as float32) as a cudaImage, as jetson
    copies it to the GPU; ``isBGR=True`` marks OpenCV's channel order (format bgr8/bgra8/...)."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    image = wrap(np.array(array))
    if image.ndim != 3 or image.channels not in (1, 3, 4) or image.dtype not in (np.uint8, np.float32):
        raise ImgclassError(f"cudaFromNumpy: a {array.dtype} array shaped {array.shape} is not an image "
                            "(HxW or HxWx1/3/4 of uint8 or float)")
    image.timestamp = int(timestamp)
    if isBGR and image.channels != 1:
        image._format = image.format.replace("rgb", "bgr")
    return image


def cudaToNumpy(image) -> np.ndarray:
    """The image's memory as a numpy array (no copy: changes show in both), shaped (height, width, channels)."""
    return np.asarray(as_image(image, "cudaToNumpy"))


def cudaDeviceSynchronize() -> None:
    """Nothing to wait for: imgclass images live in host memory and every routine has finished on return."""


def convert(pixels: np.ndarray, src_format: str, dst_format: str) -> np.ndarray:
    """Pixels of one jetson format in another (channel order, alpha, gray, 8-bit or float 0..255)."""
    if src_format == dst_format:
        return pixels
    src_order, src_channels, _ = layout(src_format)
    dst_order, dst_channels, dst_dtype = layout(dst_format)
    x = pixels.astype(np.float32)
    rgb = np.repeat(x, 3, axis=2) if src_order == "gray" else x[..., :3]
    if src_order == "bgr":
        rgb = rgb[..., ::-1]
    if dst_order == "gray":
        out = rgb @ GRAY_WEIGHTS[:, None]
    else:
        out = rgb[..., ::-1] if dst_order == "bgr" else rgb
        if dst_channels == 4:
            alpha = x[..., 3:] if src_channels == 4 else np.full_like(x[..., :1], 255)
            out = np.concatenate([out, alpha], axis=2)
    if dst_dtype == np.uint8:
        return np.clip(out, 0, 255).astype(np.uint8)  # a C cast truncates, as jetson's kernels do
    return np.ascontiguousarray(out, dtype=np.float32)


def rgb8(image) -> np.ndarray:
    """Any jetson image as HxWx3 uint8 RGB: what imageNet, saveImage and videoOutput take."""
    image = as_image(image, "image")
    return np.ascontiguousarray(convert(np.asarray(image), image.format, "rgb8"))


def cudaConvertColor(input, output) -> None:
    """Convert ``input`` into ``output``'s format (rgb <-> bgr, gray, alpha, 8-bit <-> float); same size."""
    input, output = as_image(input, "cudaConvertColor(input)"), as_image(output, "cudaConvertColor(output)")
    if (input.width, input.height) != (output.width, output.height):
        raise ImgclassError(f"cudaConvertColor: input {input.width}x{input.height} and output "
                            f"{output.width}x{output.height} differ in size; allocate the output like the input")
    output[...] = convert(np.asarray(input), input.format, output.format)
    output.timestamp = input.timestamp


def cudaResize(input, output, filter: str | int = "linear") -> None:
    """Rescale ``input`` to ``output``'s size (same format); filter ``linear`` (default) or ``point``."""
    input, output = as_image(input, "cudaResize(input)"), as_image(output, "cudaResize(output)")
    _same_format("cudaResize", input, output)
    mode = filter if isinstance(filter, int) else _FILTERS.get(str(filter).lower())
    if mode not in _FILTERS.values():
        raise ImgclassError(f"cudaResize: unknown filter '{filter}'; use 'linear' or 'point'")
    resized = cv2.resize(np.asarray(input), (output.width, output.height), interpolation=mode)
    output[...] = resized.reshape(output.shape)
    output.timestamp = input.timestamp


def cudaCrop(input, output, roi: Sequence[float]) -> None:
    """Copy the region ``roi = (left, top, right, bottom)`` of ``input`` into ``output`` (same format)."""
    input, output = as_image(input, "cudaCrop(input)"), as_image(output, "cudaCrop(output)")
    _same_format("cudaCrop", input, output)
    left, top, right, bottom = (float(v) for v in roi)
    if (min(left, top) < 0 or right > input.width or bottom > input.height or right - left <= 0
            or bottom - top <= 0 or right - left > output.width or bottom - top > output.height):
        raise ImgclassError(f"cudaCrop: invalid ROI {tuple(roi)} for a {input.width}x{input.height} input and a "
                            f"{output.width}x{output.height} output; give (left, top, right, bottom) inside the input, "
                            "no larger than the output")
    left, top, right, bottom = int(left), int(top), int(right), int(bottom)  # jetson's make_int4 truncates
    output[:bottom - top, :right - left] = input[top:bottom, left:right]
    output.timestamp = input.timestamp


def cudaNormalize(input, inputRange: Sequence[float], output, outputRange: Sequence[float]) -> None:
    """Map pixel values linearly from ``inputRange`` (min, max) to ``outputRange``; same size and format."""
    input, output = as_image(input, "cudaNormalize(input)"), as_image(output, "cudaNormalize(output)")
    _same_size_and_format("cudaNormalize", input, output)
    in_min, in_max = float(inputRange[0]), float(inputRange[1])
    out_min, out_max = float(outputRange[0]), float(outputRange[1])
    if in_max == in_min:
        raise ImgclassError(f"cudaNormalize: inputRange {tuple(inputRange)} is empty; give (min, max) with min < max")
    scale = (out_max - out_min) / (in_max - in_min)
    values = (np.asarray(input, np.float32) - in_min) * scale + out_min
    output[...] = np.clip(values, 0, 255) if output.dtype == np.uint8 else values
    output.timestamp = input.timestamp


def cudaOverlay(input, output, x: float = 0, y: float = 0) -> None:
    """Copy ``input`` onto ``output`` with its top-left corner at (x, y); parts outside are dropped."""
    input, output = as_image(input, "cudaOverlay(input)"), as_image(output, "cudaOverlay(output)")
    _same_format("cudaOverlay", input, output)
    x, y = int(x), int(y)
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + input.width, output.width), min(y + input.height, output.height)
    if right > left and bottom > top:
        output[top:bottom, left:right] = input[top - y:bottom - y, left - x:right - x]
    output.timestamp = input.timestamp


def cudaDrawCircle(input, center: Sequence[float], radius: float, color: Sequence[float], output=None) -> None:
    """A filled circle, alpha-blended with ``color`` = (r, g, b[, a]); in place unless ``output`` is given."""
    cx, cy, radius = float(center[0]), float(center[1]), float(radius)
    _blend(_target("cudaDrawCircle", input, output), color, (cx - radius, cy - radius, cx + radius, cy + radius),
           lambda xs, ys: (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2)


def cudaDrawLine(input, a: Sequence[float], b: Sequence[float], color: Sequence[float], line_width: float = 1,
                 output=None) -> None:
    """A line from ``a`` to ``b``, ``line_width`` pixels wide, alpha-blended; in place unless ``output`` is given."""
    _blend(_target("cudaDrawLine", input, output), color, *_segment(a, b, line_width))


def cudaDrawRect(input, rect: Sequence[float], color: Sequence[float] | None = None,
                 line_color: Sequence[float] | None = None, line_width: float = 1, output=None) -> None:
    """A rectangle ``rect = (left, top, right, bottom)`` filled with ``color`` and outlined with ``line_color``
    (either may be None), alpha-blended; in place unless ``output`` is given."""
    target = _target("cudaDrawRect", input, output)
    left, top, right, bottom = (float(v) for v in rect)
    if color is not None:
        _blend(target, color, (left, top, right, bottom),
               lambda xs, ys: (xs >= left) & (xs <= right) & (ys >= top) & (ys <= bottom))
    if line_color is not None:
        corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
        for a, b in zip(corners, corners[1:] + corners[:1]):
            _blend(target, line_color, *_segment(a, b, line_width))


def _target(what: str, input, output) -> cudaImage:
    """Where a drawing goes: ``input`` itself, or ``output`` holding a copy of ``input`` first (as jetson does)."""
    input = as_image(input, f"{what}(input)")
    if output is None:
        return input
    output = as_image(output, f"{what}(output)")
    _same_size_and_format(what, input, output)
    np.copyto(output, input)
    output.timestamp = input.timestamp
    return output


def _segment(a: Sequence[float], b: Sequence[float], width: float):
    """(box, inside) of a ``width``-wide segment from ``a`` to ``b``: the pixels near the segment, not the line."""
    (x1, y1), (x2, y2) = (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))
    half = max(float(width), 1.0) / 2
    length2 = (x2 - x1) ** 2 + (y2 - y1) ** 2

    def inside(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        t = np.clip(((xs - x1) * (x2 - x1) + (ys - y1) * (y2 - y1)) / length2, 0, 1) if length2 else 0.0
        return (xs - x1 - t * (x2 - x1)) ** 2 + (ys - y1 - t * (y2 - y1)) ** 2 <= half ** 2

    return (min(x1, x2) - half, min(y1, y2) - half, max(x1, x2) + half, max(y1, y2) + half), inside


def _blend(image: cudaImage, color: Sequence[float], box: tuple[float, float, float, float], inside) -> None:
    """Blend ``color`` (r, g, b[, a]) over the pixels of ``box`` (left, top, right, bottom) where ``inside(xs, ys)``."""
    rgba = [float(c) for c in color]
    if len(rgba) not in (3, 4):
        raise ImgclassError(f"color {tuple(color)} is not (r, g, b) or (r, g, b, a)")
    alpha = (rgba[3] if len(rgba) == 4 else 255.0) / 255
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])) + 1, image.width), min(int(np.ceil(box[3])) + 1, image.height)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    mask = np.broadcast_to(inside(xs, ys), xs.shape)
    # the color in the image's own channel order, blended on its color channels (an alpha channel stays)
    order, channels, _ = layout(image.format)
    paint = convert(np.array(rgba[:3], np.float32).reshape(1, 1, 3), "rgb32f", f"{order}32f").reshape(-1)
    region = np.asarray(image)[y0:y1, x0:x1, :min(channels, 3)]
    blended = region[mask].astype(np.float32) * (1 - alpha) + paint * alpha
    region[mask] = np.clip(blended, 0, 255) if image.dtype == np.uint8 else blended


def _same_format(what: str, input: cudaImage, output: cudaImage) -> None:
    if input.format != output.format:
        raise ImgclassError(f"{what}: input is {input.format} but output is {output.format}; "
                            "allocate the output in the input's format (or convert with cudaConvertColor)")


def _same_size_and_format(what: str, input: cudaImage, output: cudaImage) -> None:
    _same_format(what, input, output)
    if (input.width, input.height) != (output.width, output.height):
        raise ImgclassError(f"{what}: input is {input.width}x{input.height} but output is "
                            f"{output.width}x{output.height}; they need the same size")
