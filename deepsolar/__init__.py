"""deepsolar: find solar panels in aerial imagery and build a solar deployment database.

A reproduction of DeepSolar (Yu et al., Joule 2018). The library lives here; Prefect flows that
wire it together live in the top-level ``flows`` package.
"""

__version__ = "0.1.0"
