"""module_utils/lifeboat/compression.py: validation, complete and truncated streams."""
from __future__ import annotations

import gzip

import pytest
import zstandard

from ansible.module_utils.lifeboat import pipeline
from ansible.module_utils.lifeboat.errors import (
    ConfigError,
    StorageError,
)




from ansible.module_utils.lifeboat.pipeline import Compression


def test_compression_validation():
    with pytest.raises(ConfigError, match="compression_level"):
        pipeline.Compression("zstd", level=25)
    with pytest.raises(ConfigError, match="compression_level"):
        pipeline.Compression("gzip", level=0)
    with pytest.raises(ConfigError, match="not one of"):
        pipeline.Compression("lz4")
    assert pipeline.Compression("zstd").manifest()["algorithm"] == "zstd"
    assert pipeline.Compression("gzip").stock_decompress() == "gzip -d"

DATA = b"".join(b"COPY public.t (id) FROM stdin;\n%d\n\\.\n" % i for i in range(20000))

def _decode(algorithm: str, stored: bytes, step: int = 4096) -> bytes:
    dec = Compression(algorithm).decompressor()
    out = [dec.fn(stored[i:i + step]) for i in range(0, len(stored), step)]
    out.append(dec.finish())
    return b"".join(out)

@pytest.mark.parametrize("algorithm,pack", [("gzip", gzip.compress),
                                            ("zstd", lambda b: zstandard.ZstdCompressor().compress(b))])
def test_complete_streams_and_concatenated_members_decode(algorithm, pack):
    assert _decode(algorithm, pack(DATA)) == DATA
    assert _decode(algorithm, pack(DATA) + pack(b"tail\n")) == DATA + b"tail\n"

@pytest.mark.parametrize("algorithm,pack", [("gzip", gzip.compress),
                                            ("zstd", lambda b: zstandard.ZstdCompressor().compress(b))])
def test_truncated_stream_is_named(algorithm, pack):
    stored = pack(DATA)
    with pytest.raises(StorageError, match="unexpected end of the compressed stream.*truncated"):
        _decode(algorithm, stored[: len(stored) // 2])
    with pytest.raises(StorageError, match="truncated"):  # a second member cut short
        _decode(algorithm, stored + stored[:100])

def test_not_gzip_is_named():
    with pytest.raises(StorageError, match="gzip decompression failed: .*not gzip"):
        _decode("gzip", b"plain text, not gzip\n" * 10)
