import numpy as np
import pytest

from lidarssl.data.labels import load_class_map
from lidarssl.errors import DataError


def test_nuscenes_map_has_16_classes_and_folds_raw_ids():
    cmap = load_class_map("nuscenes")
    assert cmap.num_classes == 16 and cmap.classes[0] == "barrier" and cmap.classes[-1] == "vegetation"
    raw = np.array([24, 28, 31, 17, 27, 30, 15, 16, 0, 2, 4])
    expected = [10, 14, 255, 3, 13, 15, 2, 2, 255, 6, 6]
    assert cmap.map(raw).tolist() == expected


def test_unknown_raw_ids_are_named():
    with pytest.raises(DataError, match=r"x.label: raw label ids \[40, 99\] are not in the nuscenes class map"):
        load_class_map("nuscenes").map(np.array([1, 40, 99, 40]), source="x.label")


def test_unknown_map_lists_known_ones():
    with pytest.raises(DataError, match=r"no class map 'kitty'; known maps: \[.nuscenes"):
        load_class_map("kitty")
