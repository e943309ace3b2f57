"""Unit tests of the torch-only core, imported as the installed package `cross_frame_attention`
(pyproject maps it to attention/), never through the repo root."""
