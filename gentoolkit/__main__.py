"""``python -m gentoolkit`` runs the ``gentool`` command line."""

from gentoolkit.cli import main

if __name__ == "__main__":
    main()
