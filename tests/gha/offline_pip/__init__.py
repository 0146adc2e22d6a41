"""The emulated runner image's `pip`: installs local source trees offline (see runner._setup_python)."""
