"""Applications of the library, apart from its core: the ``unirnn`` command line
(:mod:`unirnn.tools.cli`), ``unirnn check`` (:mod:`unirnn.tools.check`) and
``unirnn demo`` (:mod:`unirnn.tools.demo`). Nothing in the core imports them."""
