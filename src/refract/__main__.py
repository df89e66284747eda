"""``python -m refract`` runs the command line."""

from refract.cli import main

if __name__ == "__main__":
    main()
