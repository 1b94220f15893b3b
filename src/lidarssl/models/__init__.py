"""Networks: 3D backbones (:mod:`lidarssl.models.backbones`); image teachers and heads come beside them."""
