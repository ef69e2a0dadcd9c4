"""Media: where local pictures and sound come from, and where remote ones go."""
