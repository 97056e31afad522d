"""Tools for developing and testing llmchat; not part of the product (left out of the
Docker image by .dockerignore)."""
