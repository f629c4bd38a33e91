"""acme-dsrt: an example third-party backend for dsrt."""
