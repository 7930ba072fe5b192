"""The compact index: streamed JSON lists, records pickled as they come."""
from __future__ import annotations

import json

import numpy as np
import pytest

from projects.sa2va.datasets.base import Sa2VABaseDataset, iter_json_array


@pytest.mark.parametrize('chunk', [1, 3, 7, 64, 1 << 20])
def test_iter_json_array_matches_json_load(tmp_path, chunk):
    data = [{'id': i, 'text': 'x' * (i * 5), 'poly': [[1.5, 2.0] * i]}
            for i in range(30)] + [[], 'str ] with bracket', 3.25, None]
    path = tmp_path / 'a.json'
    path.write_text(' \n' + json.dumps(data, indent=1) + '\n')
    assert list(iter_json_array(str(path), chunk_size=chunk)) == data
    (tmp_path / 'e.json').write_text('[]')
    assert list(iter_json_array(str(tmp_path / 'e.json'), chunk)) == []


@pytest.mark.parametrize('text,msg', [
    ('{"a": 1}', 'JSON list'),
    ('[1, 2', 'not closed'),
    ('[1, {"a": }]', 'malformed JSON at character'),
    ('[1 2]', 'expected "," or "]"'),
])
def test_iter_json_array_errors(tmp_path, text, msg):
    path = tmp_path / 'bad.json'
    path.write_text(text)
    with pytest.raises(ValueError, match=msg):
        list(iter_json_array(str(path), chunk_size=4))


class _Streamed(Sa2VABaseDataset):
    def load_data_list(self):
        for i in range(1000):
            yield dict(record_id=i, text_for_length='y' * (i % 50 + 1),
                       num_tiles_estimate=i % 3)


def test_streamed_index_is_compact_and_equal():
    ds = _Streamed()
    assert len(ds) == 1000 and ds.data_list == []
    assert ds.data_bytes.dtype == np.uint8
    info = ds.get_data_info(123)
    assert info['record_id'] == 123 and info['num_tiles_estimate'] == 0
    lengths = ds.modality_length
    assert lengths[123] < 0 and lengths[124] > 256
    assert lengths.dtype == np.int32
    assert ds.index_nbytes() < 1000 * 200
    plain = _Streamed(serialize_data=False)
    assert np.array_equal(plain.modality_length, lengths)
    assert plain.get_data_info(5)['record_id'] == 5
