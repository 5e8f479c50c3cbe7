"""Where weights and data come from: local paths and package files (pkg:), split archives, hub
ids."""
