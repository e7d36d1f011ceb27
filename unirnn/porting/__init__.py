"""Converters between canonical weights and each framework's native layers and files.

One module per framework (``unirnn.porting.torch`` ...), each importing its framework;
``unirnn.to_torch`` and friends load them lazily.
"""
