"""Class colours for plots and overlays (RGB uint8), chosen so neighbouring classes stay apart."""

from __future__ import annotations

import numpy as np

# One colour per nuScenes training class, in class-map order; other maps cycle through the same list.
_COLOURS = [
    (255, 120, 50),   # barrier
    (255, 192, 203),  # bicycle
    (255, 255, 0),    # bus
    (0, 150, 245),    # car
    (0, 255, 255),    # construction_vehicle
    (200, 180, 0),    # motorcycle
    (255, 0, 0),      # pedestrian
    (255, 240, 150),  # traffic_cone
    (135, 60, 0),     # trailer
    (160, 32, 240),   # truck
    (255, 0, 255),    # driveable_surface
    (139, 137, 137),  # other_flat
    (75, 0, 75),      # sidewalk
    (150, 240, 80),   # terrain
    (230, 230, 250),  # manmade
    (0, 175, 0),      # vegetation
]
IGNORE_COLOUR = (60, 60, 60)


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours."""
    return np.array([_COLOURS[i % len(_COLOURS)] for i in range(num_classes)], np.uint8)


def colour_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, 3) uint8 colour of each training id; ids outside 0..num_classes-1 (ignore) are grey."""
    table = np.vstack([class_colours(num_classes), np.array(IGNORE_COLOUR, np.uint8)])
    idx = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return table[idx]
