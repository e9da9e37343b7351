"""PIM sandbox: a local emulator of Microsoft Graph PIM for Entra directory roles.

Run it with ``python -m pim_emulator serve --port 0 --data-dir DIR``; see emulator/README.md.
"""

__version__ = "0.1.0"
