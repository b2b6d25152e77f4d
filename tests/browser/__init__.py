"""Real-browser tests of the explorer (Playwright + Debian chromium); a package so its conftest never shadows tests/conftest.py."""
