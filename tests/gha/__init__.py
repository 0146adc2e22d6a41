"""A small GitHub Actions emulator for the workflow tests: expressions, a runner, and a fake GitHub."""
