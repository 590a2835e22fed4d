"""module_utils/lifeboat/extsort.py: the external sort."""
from __future__ import annotations

import random


from ansible.module_utils.lifeboat.extsort import external_sort


def test_external_sort_spills_and_merges(tmp_path):
    items = [f"k/{random.random()}/é+ {i}" for i in range(1000)]
    out = list(external_sort(iter(items), lambda k: k, lambda k: [k], lambda x: x[0], str(tmp_path), "t", 37))
    assert out == sorted(items)
    assert len(list(tmp_path.iterdir())) == 1000 // 37, "runs were spilled to disk"
