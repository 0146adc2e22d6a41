"""The Kaleyra profile reconciler: config-as-code for WhatsApp Business phone-number profiles."""

# The package's version, written here only: pyproject.toml reads it (dynamic version), `reconciler
# --version` prints it, and the release workflow refuses a tag that differs from it.
__version__ = "0.1.0"
