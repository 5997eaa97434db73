"""Session Vault: envelope-encrypted storage and exclusive, audited release of Para wallet sessions."""

__version__ = "0.1.0"
__all__ = ["__version__"]
