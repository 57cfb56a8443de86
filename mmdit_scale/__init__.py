"""mmdit-scale: rectified-flow MM-DiT pretraining.

Importing the package is free of torch so that the CLI stays fast; import the
subpackages (`mmdit_scale.model`, `mmdit_scale.flow`, ...) for the real work.
"""
__version__ = "0.1.0"
