"""History: every run's figures kept per hardware key, change points found in each case's series,
and a static page and a Markdown summary of them."""
