"""``python -m spectral_edit.cli``: the ``sea`` command (as the console script runs it)."""

from . import main

if __name__ == "__main__":
    main()
