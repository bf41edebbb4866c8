"""Direct-chunk decoding of one-frame-per-chunk bitshuffle-LZ4 HDF5 datasets.

h5py serialises every HDF5 call behind one global lock, so frames read through
``dataset[k]`` decompress one at a time whatever the number of threads.  Here the
compressed chunk is fetched as bytes (``Dataset.id.read_direct_chunk``, cheap, under the
lock) and decompressed by DECTRIS's ``dectris-compression`` (the fastest decoder measured
here, ``benchmarks/bench_decompression.py``; it releases the GIL while decoding, so several
threads decompress at once), else by the ``bitshuffle`` package (releases the GIL too).

Chunk format of the HDF5 bitshuffle filter (id 32008) with LZ4, as ``bshuf_h5filter.c``
writes it and hdf5plugin's ``Bitshuffle(cname="lz4")`` produces::

    bytes 0–7    uncompressed size in bytes, big-endian uint64
    bytes 8–11   block size in bytes, big-endian uint32
    bytes 12–    LZ4 blocks of the bit-shuffled data (bitshuffle's own block format)

Anything else (other filters, several filters, chunks not one whole frame, virtual
datasets) is left to h5py: :func:`direct_chunk_codec` returns None for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numba
import numpy as np

__all__ = ["BSHUF_FILTER_ID", "ChunkCodec", "decode_bslz4_chunk", "direct_chunk_codec"]

#: HDF5 filter id of bitshuffle (registered with The HDF Group).
BSHUF_FILTER_ID = 32008
#: ``cd_values[4]`` of the bitshuffle filter when it compresses with LZ4 (0 none, 3 zstd).
_BSHUF_LZ4 = 2
_HEADER_BYTES = 12


@dataclass(frozen=True)
class ChunkCodec:
    """How to decode the chunks of a dataset whose every chunk is one bitshuffle-LZ4 frame.

    Attributes
    ----------
    frame_shape : (int, int)
        (rows, columns) of one frame = one chunk.
    dtype : numpy.dtype
        Stored pixel type (native byte order).
    """

    frame_shape: tuple[int, int]
    dtype: np.dtype

    def decode(self, chunk: bytes | np.ndarray, filter_mask: int = 0) -> np.ndarray:
        """Frame (rows, columns) from the bytes ``read_direct_chunk`` returned.

        ``filter_mask`` bit 0 set means HDF5 stored this chunk without the filter (it did
        not compress); the bytes are then the raw frame.
        """
        if filter_mask & 1:
            raw = np.frombuffer(chunk, self.dtype)
            if raw.size != self.frame_shape[0] * self.frame_shape[1]:
                raise ValueError(f"unfiltered chunk of {raw.nbytes} bytes, not one frame")
            return raw.reshape(self.frame_shape)
        return decode_bslz4_chunk(chunk, self.frame_shape, self.dtype)


def direct_chunk_codec(dataset: h5py.Dataset) -> ChunkCodec | None:
    """The codec of ``dataset`` when its chunks can be decoded directly, else None.

    Direct decoding needs a 3-D (n, rows, columns) non-virtual dataset chunked one frame
    per chunk, a native-order integer or float type, and exactly one filter: bitshuffle
    with LZ4.  Everything else (uncompressed, gzip, bitshuffle-zstd, Blosc, …) returns
    None and is read through h5py.

    Examples
    --------
    >>> import tempfile, pathlib, hdf5plugin
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "f.h5"
    >>> with h5py.File(path, "w") as f:
    ...     zipped = f.create_dataset("a", data=np.zeros((2, 3, 4), np.uint16),
    ...                               chunks=(1, 3, 4), **hdf5plugin.Bitshuffle())
    ...     plain = f.create_dataset("b", data=np.zeros((2, 3, 4), np.uint16))
    ...     direct_chunk_codec(zipped), direct_chunk_codec(plain)
    (ChunkCodec(frame_shape=(3, 4), dtype=dtype('uint16')), None)
    """
    if dataset.ndim != 3 or dataset.is_virtual or dataset.chunks != (1, *dataset.shape[1:]):
        return None
    dtype = dataset.dtype
    if dtype.kind not in "uif" or not dtype.isnative:
        return None
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return None
    code, _flags, values, _name = plist.get_filter(0)
    if code != BSHUF_FILTER_ID or len(values) < 5 or values[4] != _BSHUF_LZ4:
        return None
    return ChunkCodec((int(dataset.shape[1]), int(dataset.shape[2])), np.dtype(dtype))


def decode_bslz4_chunk(
    chunk: bytes | np.ndarray, shape: tuple[int, ...], dtype: np.dtype | type
) -> np.ndarray:
    """Decompress one HDF5 bitshuffle-LZ4 chunk (filter 32008) into an array.

    Releases the GIL while decompressing, so threads run in parallel.

    Parameters
    ----------
    chunk : bytes or numpy.ndarray
        The stored chunk: the 12-byte header then the LZ4 blocks.
    shape : tuple of int
        Shape of the decoded chunk, e.g. (rows, columns) of one frame.
    dtype : numpy.dtype
        Element type of the decoded chunk.

    Returns
    -------
    numpy.ndarray
        ``shape``, ``dtype``, a new array (read-only with dectris-compression).

    Raises
    ------
    ValueError
        The header disagrees with ``shape`` × ``dtype`` or the LZ4 stream is corrupt.

    Examples
    --------
    >>> frame = np.arange(12, dtype=np.uint32).reshape(3, 4)
    >>> import bitshuffle
    >>> block = bitshuffle.compress_lz4(frame)  # the LZ4 blocks without the header
    >>> header = (48).to_bytes(8, "big") + (8192).to_bytes(4, "big")
    >>> decode_bslz4_chunk(header + block.tobytes(), (3, 4), np.uint32)[1].tolist()
    [4, 5, 6, 7]
    """
    dtype = np.dtype(dtype)
    data = np.frombuffer(chunk, np.uint8)
    expected = int(np.prod(shape)) * dtype.itemsize
    if data.size < _HEADER_BYTES:
        raise ValueError(f"chunk of {data.size} bytes is shorter than its 12-byte header")
    n_bytes = int.from_bytes(data[:8].tobytes(), "big")
    block_bytes = int.from_bytes(data[8:12].tobytes(), "big")
    if n_bytes != expected:
        raise ValueError(f"chunk header says {n_bytes} bytes, expected {expected} ({shape})")
    if block_bytes == 0 or block_bytes % (8 * dtype.itemsize):
        raise ValueError(
            f"chunk header block size {block_bytes} bytes is not a multiple of 8 × "
            f"{dtype.itemsize} bytes"
        )
    _check_blocks(data, expected // dtype.itemsize, block_bytes // dtype.itemsize, dtype)
    try:
        return _decompress(data, tuple(shape), dtype, block_bytes // dtype.itemsize)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"corrupt LZ4 data: {error}") from error


def _decompress_dectris(data: np.ndarray, shape: tuple, dtype: np.dtype, block: int):
    """Decode with dectris-compression (reads the header itself); read-only array."""
    decoded = _dectris_decompress(data, "bslz4", elem_size=dtype.itemsize)
    return np.frombuffer(decoded, dtype).reshape(shape)


def _decompress_bitshuffle(data: np.ndarray, shape: tuple, dtype: np.dtype, block: int):
    """Decode with the bitshuffle package (the LZ4 blocks after the 12-byte header)."""
    import bitshuffle

    return bitshuffle.decompress_lz4(data[_HEADER_BYTES:], shape, dtype, block)


try:
    from dectris.compression import decompress as _dectris_decompress
except ImportError:  # pragma: no cover - platforms without a dectris-compression build
    _decompress = _decompress_bitshuffle
else:
    _decompress = _decompress_dectris


def _check_blocks(data: np.ndarray, n_elements: int, block: int, dtype: np.dtype) -> None:
    """Check the LZ4 block lengths tile the chunk exactly (bitshuffle trusts them blindly).

    bitshuffle's decoder is not told the input size: a corrupt or truncated chunk would make
    it read past the buffer.  The blocks: ``n_elements // block`` full blocks, one last block
    of the remaining multiple of 8 elements, each a big-endian uint32 length then that many
    LZ4 bytes; the final ``n_elements % 8`` elements are stored raw.
    """
    n_blocks = n_elements // block + (1 if (n_elements % block) // 8 else 0)
    tail = (n_elements % 8) * dtype.itemsize
    if _blocks_end(data, _HEADER_BYTES, n_blocks) + tail != data.size:
        raise ValueError(
            f"corrupt or truncated chunk: its {n_blocks} LZ4 blocks do not fill its "
            f"{data.size} bytes"
        )


@numba.njit(nogil=True, cache=True)
def _blocks_end(data: np.ndarray, offset: int, n_blocks: int) -> int:  # pragma: no cover
    """Offset after ``n_blocks`` length-prefixed blocks from ``offset``; −1 if past the end.

    Compiled without the GIL: a Python loop here (0.3 ms per 4M frame) held the GIL in every
    decoding thread and stalled the thread reading the chunks.
    """
    end = data.size
    for _ in range(n_blocks):
        if offset + 4 > end:
            return -1
        length = (
            (np.int64(data[offset]) << 24)
            | (np.int64(data[offset + 1]) << 16)
            | (np.int64(data[offset + 2]) << 8)
            | np.int64(data[offset + 3])
        )
        offset += 4 + length
    return offset
